//! [`NativeProfile`] to and from its generated struct. Structure only: the references
//! between tables are checked by [`NativeProfile::check`].

use super::module_to_wire;
use crate::model::Module;
use crate::native::*;
use crate::pb;

fn value_type_from_wire(v: Option<pb::ValueType>) -> ValueType {
    v.map(|v| ValueType {
        name: v.r#type,
        unit: v.unit,
    })
    .unwrap_or_default()
}

pub(crate) fn value_type_to_wire(v: &ValueType) -> pb::ValueType {
    pb::ValueType {
        r#type: v.name.clone(),
        unit: v.unit.clone(),
    }
}

impl From<pb::NativeProfile> for NativeProfile {
    fn from(p: pb::NativeProfile) -> Self {
        NativeProfile {
            sample_types: p
                .sample_types
                .into_iter()
                .map(|v| value_type_from_wire(Some(v)))
                .collect(),
            period_type: value_type_from_wire(p.period_type),
            period: p.period,
            time_unix_nanos: p.time_unix_nanos,
            duration_nanos: p.duration_nanos,
            comments: p.comments,
            modules: p
                .modules
                .into_iter()
                .map(|m| Module {
                    name: m.name,
                    build_id: m.build_id,
                })
                .collect(),
            locations: p
                .locations
                .into_iter()
                .map(|l| match l.kind {
                    Some(pb::native_location::Kind::Native(n)) => Location::Native {
                        module: n.module,
                        offset: n.offset,
                    },
                    Some(pb::native_location::Kind::Symbolic(s)) => Location::Symbolic(
                        s.frames
                            .into_iter()
                            .map(|f| SymbolicFrame {
                                function: f.function,
                                file: f.file,
                                line: f.line,
                            })
                            .collect(),
                    ),
                    // An unset location is an empty symbolic one, refused by `check`.
                    None => Location::Symbolic(Vec::new()),
                })
                .collect(),
            stacks: p.stacks.into_iter().map(|s| s.locations).collect(),
            samples: p
                .samples
                .into_iter()
                .map(|s| NativeSample {
                    stack: s.stack,
                    values: s.values,
                    labels: s
                        .labels
                        .into_iter()
                        .map(|l| ProfileLabel {
                            key: l.key,
                            str: l.str,
                            num: l.num,
                            unit: l.unit,
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

impl From<&NativeProfile> for pb::NativeProfile {
    fn from(p: &NativeProfile) -> Self {
        pb::NativeProfile {
            sample_types: p.sample_types.iter().map(value_type_to_wire).collect(),
            period_type: Some(value_type_to_wire(&p.period_type)),
            period: p.period,
            time_unix_nanos: p.time_unix_nanos,
            duration_nanos: p.duration_nanos,
            comments: p.comments.clone(),
            modules: p.modules.iter().map(module_to_wire).collect(),
            locations: p.locations.iter().map(location_to_wire).collect(),
            stacks: p
                .stacks
                .iter()
                .map(|s| pb::NativeStack {
                    locations: s.clone(),
                })
                .collect(),
            samples: p
                .samples
                .iter()
                .map(|s| pb::NativeSample {
                    stack: s.stack,
                    values: s.values.clone(),
                    labels: s.labels.iter().map(label_to_wire).collect(),
                })
                .collect(),
            stream_reset: false,
            profile_modules: Vec::new(),
            module_limits: Vec::new(),
        }
    }
}

/// A location as the wire has it (its module an index, as given).
pub(crate) fn location_to_wire(l: &Location) -> pb::NativeLocation {
    pb::NativeLocation {
        kind: Some(match l {
            Location::Native { module, offset } => {
                pb::native_location::Kind::Native(pb::ModuleOffset {
                    module: *module,
                    offset: *offset,
                })
            }
            Location::Symbolic(frames) => {
                pb::native_location::Kind::Symbolic(pb::SymbolicLocation {
                    frames: frames
                        .iter()
                        .map(|f| pb::SymbolicFrame {
                            function: f.function.clone(),
                            file: f.file.clone(),
                            line: f.line,
                        })
                        .collect(),
                })
            }
        }),
    }
}

/// A sample label as the wire has it.
pub(crate) fn label_to_wire(l: &ProfileLabel) -> pb::ProfileLabel {
    pb::ProfileLabel {
        key: l.key.clone(),
        str: l.str.clone(),
        num: l.num,
        unit: l.unit.clone(),
    }
}
