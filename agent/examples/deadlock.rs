//! Scenario 2: a lock-order deadlock that makes later requests pile up.
//!
//! Transfers lock two accounts; one path locks (a, b), the other (b, a). `curl
//! 127.0.0.1:PORT/bug` runs both at once, they deadlock, and every later request (80 of
//! them, a thread each) piles up behind the locks. The thread rule fires and the thread
//! dump shows the pile-up inside `transfer_between_accounts`.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

struct Bank {
    a: Mutex<u64>,
    b: Mutex<u64>,
}

/// The culprit: takes the two locks in the order it is given.
#[inline(never)]
fn transfer_between_accounts(first: &Mutex<u64>, second: &Mutex<u64>) {
    let mut x = first.lock().unwrap_or_else(|p| p.into_inner());
    std::thread::sleep(Duration::from_millis(50));
    let mut y = second.lock().unwrap_or_else(|p| p.into_inner());
    *x = x.wrapping_sub(1);
    *y = y.wrapping_add(1);
}

fn main() {
    let agent = common::agent("deadlock", |b| b);
    common::warm_up(&agent, 10);
    let bank = Arc::new(Bank {
        a: Mutex::new(100),
        b: Mutex::new(100),
    });
    common::serve(move || {
        let (b1, b2) = (Arc::clone(&bank), Arc::clone(&bank));
        std::thread::spawn(move || transfer_between_accounts(&b1.a, &b1.b));
        std::thread::spawn(move || transfer_between_accounts(&b2.b, &b2.a));
        std::thread::sleep(Duration::from_millis(200));
        for _ in 0..80 {
            let bank = Arc::clone(&bank);
            let _ = std::thread::Builder::new()
                .name("transfer".to_owned())
                .spawn(move || transfer_between_accounts(&bank.a, &bank.b));
        }
    });
}
