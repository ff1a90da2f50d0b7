//! A pseudo-terminal to run a program on as a person's terminal runs it: its standard
//! output and error are the terminal, of a given width, and what it wrote is read back.

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, ExitStatus, Stdio};

/// Runs `cmd` with standard output and error on a new pseudo-terminal `columns` wide
/// (standard input closed); returns its exit status and everything it wrote, with the
/// terminal's `\r\n` read as `\n`.
pub(crate) fn run_on_terminal(mut cmd: Command, columns: u16) -> (ExitStatus, String) {
    let mut master: libc::c_int = -1;
    let mut slave: libc::c_int = -1;
    let size = libc::winsize {
        ws_row: 50,
        ws_col: columns,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: both out-pointers point at live ints; a null name buffer and null terminal
    // settings are allowed (no name wanted, default settings); `size` is a valid winsize
    // that outlives the call.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &size,
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: openpty returned these two descriptors, open and owned by nothing else.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(
            slave.try_clone().expect("a second terminal handle"),
        ))
        .stderr(Stdio::from(slave));
    let mut child = cmd.spawn().expect("the program starts");
    // The command holds this side's copies of the terminal: closing them lets the read
    // below end when the program exits.
    drop(cmd);
    let mut master = std::fs::File::from(master);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match master.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            // Linux answers EIO once no process has the terminal open any more.
            Err(e) if e.raw_os_error() == Some(libc::EIO) => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("reading the terminal: {e}"),
        }
    }
    let status = child.wait().expect("the program ends");
    (status, String::from_utf8_lossy(&out).replace("\r\n", "\n"))
}

/// `text` without the SGR escape sequences (`ESC [ ... m`) a program colours with: what
/// a person sees, for measuring widths.
pub(crate) fn without_colour(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("\x1b[") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        match after.find(|c: char| !(c.is_ascii_digit() || c == ';')) {
            Some(end) if after[end..].starts_with('m') => rest = &after[end + 1..],
            _ => {
                out.push_str("\x1b[");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}
