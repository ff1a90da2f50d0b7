//! Where the process's cgroups are: the mount of each hierarchy it is in (from
//! mountinfo), its directory there (from `/proc/self/cgroup`), and which hierarchy a
//! controller's limits are read from on a hybrid host.

use std::path::{Component, Path, PathBuf};

use super::parse::Mount;
use super::{read_file, CgroupError, CgroupVersion};

/// One cgroup hierarchy the process is in: its mount point and the process's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Hierarchy {
    /// [`CgroupVersion::V1`] or [`CgroupVersion::V2`].
    pub(super) version: CgroupVersion,
    pub(super) mount: PathBuf,
    pub(super) dir: PathBuf,
}

impl Hierarchy {
    /// The process's directory, then each ancestor up to and including the mount point.
    pub(super) fn chain(&self) -> Vec<PathBuf> {
        let mut dirs = vec![self.dir.clone()];
        let mut dir = self.dir.as_path();
        while dir != self.mount {
            match dir.parent() {
                Some(parent) if parent.starts_with(&self.mount) => {
                    dirs.push(parent.to_path_buf());
                    dir = parent;
                }
                _ => break,
            }
        }
        dirs
    }
}

/// The process's path made relative to a mount's root; `None` when it is not under it
/// or leaves it (`..`).
fn relative_to_root(cgroup_path: &str, mount_root: &str) -> Option<PathBuf> {
    let rel = Path::new(cgroup_path).strip_prefix(mount_root).ok()?;
    rel.components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then(|| rel.to_path_buf())
}

/// Finds the mount of a hierarchy (`cgroup2`, or `cgroup` with `controller` among its
/// super options) and the process's directory in it.
pub(super) fn locate(
    mounts: &[Mount],
    version: CgroupVersion,
    controller: Option<&str>,
    cgroup_path: &str,
    root: &Path,
    notes: &mut Vec<String>,
) -> Option<Hierarchy> {
    let fstype = if version == CgroupVersion::V2 {
        "cgroup2"
    } else {
        "cgroup"
    };
    let candidates: Vec<&Mount> = mounts
        .iter()
        .filter(|m| m.fstype == fstype)
        .filter(|m| controller.is_none_or(|c| m.super_options.iter().any(|o| o == c)))
        .collect();
    // Of the mounts the process's path is under, the one whose root is deepest.
    let best = candidates
        .iter()
        .filter_map(|m| relative_to_root(cgroup_path, &m.root).map(|rel| (*m, rel)))
        .max_by_key(|(m, _)| Path::new(&m.root).components().count());
    let (mount, rel) = match best {
        Some((m, rel)) => (m, rel),
        None => {
            let m = candidates.first()?;
            let mount = under_root(root, &m.mount_point);
            notes.push(format!(
                "cgroups: {} path {cgroup_path:?} is not under the root {:?} of the mount {}; using the mount point",
                controller.unwrap_or("v2"),
                m.root,
                mount.display(),
            ));
            return Some(Hierarchy {
                version,
                dir: mount.clone(),
                mount,
            });
        }
    };
    let mount = under_root(root, &mount.mount_point);
    let dir = if rel.as_os_str().is_empty() {
        mount.clone()
    } else {
        mount.join(rel)
    };
    Some(Hierarchy {
        version,
        mount,
        dir,
    })
}

fn under_root(root: &Path, mount_point: &str) -> PathBuf {
    root.join(mount_point.trim_start_matches('/'))
}

/// The v2 controllers available to the process's cgroup: its `cgroup.controllers`,
/// else the mount point's. Returns the file read with its list.
pub(super) fn v2_controllers(v2: &Hierarchy) -> Result<(PathBuf, Vec<String>), CgroupError> {
    let own = v2.dir.join("cgroup.controllers");
    let first = match read_file(&own) {
        Ok(text) => return Ok((own, split_words(&text))),
        Err(err) => err,
    };
    if v2.dir == v2.mount {
        return Err(first);
    }
    let top = v2.mount.join("cgroup.controllers");
    read_file(&top)
        .map(|text| (top, split_words(&text)))
        .map_err(|_| first)
}

fn split_words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

/// Picks the hierarchy to read a controller's limits from: v2 when its
/// `cgroup.controllers` lists the controller, else v1; `Err` says why there is none.
pub(super) fn choose(
    controller: &str,
    v1: Option<&Hierarchy>,
    v2: Option<&Hierarchy>,
    v2_controllers: Option<&Result<(PathBuf, Vec<String>), CgroupError>>,
    notes: &mut Vec<String>,
) -> Result<Hierarchy, String> {
    let listed = |r: &Result<(PathBuf, Vec<String>), CgroupError>| {
        r.as_ref()
            .is_ok_and(|(_, list)| list.iter().any(|c| c == controller))
    };
    match (v2, v2_controllers) {
        (Some(h), Some(ctrls)) if listed(ctrls) => return Ok(h.clone()),
        _ => {}
    }
    if let Some(h) = v1 {
        return Ok(h.clone());
    }
    match (v2, v2_controllers) {
        (Some(h), Some(Err(err))) => {
            notes.push(format!(
                "cgroups: {err}; assuming the {controller} controller is on v2"
            ));
            Ok(h.clone())
        }
        (Some(_), Some(Ok((path, _)))) => Err(format!(
            "the {controller} controller is not enabled in {}",
            path.display()
        )),
        _ => Err(format!(
            "no cgroup hierarchy with the {controller} controller in /proc/self/cgroup and mountinfo"
        )),
    }
}
