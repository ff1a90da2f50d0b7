//! OTLP profiles (`v1development`, proto release v1.10.0) to pprof: each profile of a
//! request, with the request's shared dictionary, becomes one `profile.proto` message.
//!
//! Profiles of one scope that share a non-zero `profile_id` and start are one
//! measurement with several sample types (OTLP carries one sample type per profile, pprof
//! several): they become one pprof profile with a sample type each, values matched by
//! stack and attributes — so a pprof exported by [`crate::query::otlp`] comes back as
//! the same profile. Every index is checked; a profile that refers to something missing
//! is refused on its own (a partial success), never a panic.

use std::collections::{BTreeMap, HashMap};

use holmes_proto::pprof::{Label, Line, Profile, Sample};
use holmes_proto::profile_tables::ProfileTables;
use holmes_proto::ProfileKind;
use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::profiles::v1development as otlp;

/// The attribute that names the kind of profile a Holmes export came from.
pub const KIND_ATTRIBUTE: &str = "holmes.profile.kind";

/// One OTLP measurement as pprof, with what is known of where it came from.
#[derive(Debug, Clone)]
pub struct Converted {
    /// The resource's attributes and the profile's, as strings.
    pub attributes: BTreeMap<String, String>,
    /// What it measures.
    pub kind: ProfileKind,
    /// Start, nanoseconds since the Unix epoch.
    pub started_unix_nanos: u64,
    /// Length in nanoseconds.
    pub duration_nanos: u64,
    /// The encoded `profile.proto` (not gzipped).
    pub pprof: Vec<u8>,
    /// The OTLP profile id (empty when none was given).
    pub profile_id: Vec<u8>,
}

/// Why one OTLP profile was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// An index points past its table.
    #[error("{what} index {index} is outside the dictionary's {table} ({len} entries)")]
    Dangling {
        /// Where the index is.
        what: &'static str,
        /// The table.
        table: &'static str,
        /// The index.
        index: i64,
        /// The table's length.
        len: usize,
    },
    /// A sample type Holmes does not store.
    #[error("sample type {0:?} is not a CPU, heap or goroutine profile")]
    UnsupportedKind(String),
}

fn get<'a, T>(
    table: &'a [T],
    index: i32,
    what: &'static str,
    name: &'static str,
) -> Result<&'a T, ConvertError> {
    usize::try_from(index)
        .ok()
        .and_then(|i| table.get(i))
        .ok_or(ConvertError::Dangling {
            what,
            table: name,
            index: i64::from(index),
            len: table.len(),
        })
}

/// Every profile of `request`: converted, or why not.
pub fn convert(request: &ExportProfilesServiceRequest) -> Vec<Result<Converted, ConvertError>> {
    let empty = otlp::ProfilesDictionary::default();
    let dict = request.dictionary.as_ref().unwrap_or(&empty);
    let mut out = Vec::new();
    for rp in &request.resource_profiles {
        let mut resource = BTreeMap::new();
        if let Some(r) = &rp.resource {
            for kv in &r.attributes {
                if let Some((k, v)) = key_value(dict, kv) {
                    resource.insert(k, v);
                }
            }
        }
        for sp in &rp.scope_profiles {
            // Profiles of one measurement: same non-zero id and start.
            let mut groups: Vec<Vec<&otlp::Profile>> = Vec::new();
            let mut by_id: HashMap<(&[u8], u64), usize> = HashMap::new();
            for p in &sp.profiles {
                let has_id = p.profile_id.iter().any(|b| *b != 0);
                match by_id.get(&(p.profile_id.as_slice(), p.time_unix_nano)) {
                    Some(&g) if has_id => groups[g].push(p),
                    _ => {
                        if has_id {
                            by_id.insert((p.profile_id.as_slice(), p.time_unix_nano), groups.len());
                        }
                        groups.push(vec![p]);
                    }
                }
            }
            for group in groups {
                out.push(convert_group(dict, &resource, &group));
            }
        }
    }
    out
}

fn string(dict: &otlp::ProfilesDictionary, index: i32) -> Result<&str, ConvertError> {
    get(&dict.string_table, index, "string", "string_table").map(String::as_str)
}

/// An attribute as text.
fn any_text(dict: &otlp::ProfilesDictionary, value: Option<&AnyValue>) -> Option<String> {
    match value?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::StringValueStrindex(i) => string(dict, *i).ok().map(str::to_owned),
        any_value::Value::BoolValue(b) => Some(b.to_string()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        any_value::Value::DoubleValue(d) => Some(d.to_string()),
        _ => None,
    }
}

fn key_value(dict: &otlp::ProfilesDictionary, kv: &KeyValue) -> Option<(String, String)> {
    let key = if kv.key.is_empty() {
        string(dict, kv.key_strindex).ok()?.to_owned()
    } else {
        kv.key.clone()
    };
    (!key.is_empty()).then_some(())?;
    Some((key, any_text(dict, kv.value.as_ref())?))
}

/// The kind a sample type (and period type) measures.
fn kind_of(sample_type: &str, period_type: &str) -> Option<ProfileKind> {
    match (sample_type, period_type) {
        ("cpu", _) | (_, "cpu") => Some(ProfileKind::Cpu),
        (t, _) if t.starts_with("alloc_") || t.starts_with("inuse_") => Some(ProfileKind::Heap),
        ("goroutine" | "goroutines", _) => Some(ProfileKind::Tasks),
        ("threads", _) => Some(ProfileKind::Threads),
        ("tasks", _) => Some(ProfileKind::Tasks),
        _ => None,
    }
}

/// pprof ids of the dictionary's entries, made as they are first used.
struct Builder<'a> {
    dict: &'a otlp::ProfilesDictionary,
    tables: ProfileTables,
    functions: HashMap<i32, u64>,
    mappings: HashMap<i32, u64>,
    locations: HashMap<i32, u64>,
}

impl Builder<'_> {
    fn function(&mut self, index: i32) -> Result<u64, ConvertError> {
        if let Some(&id) = self.functions.get(&index) {
            return Ok(id);
        }
        let f = get(&self.dict.function_table, index, "line", "function_table")?;
        let name = string(self.dict, f.name_strindex)?;
        let system = string(self.dict, f.system_name_strindex)?;
        let file = string(self.dict, f.filename_strindex)?;
        let system = if system == name { "" } else { system };
        let id = self.tables.function(name, system, file, f.start_line);
        self.functions.insert(index, id);
        Ok(id)
    }

    fn mapping(&mut self, index: i32) -> Result<u64, ConvertError> {
        if index == 0 {
            return Ok(0);
        }
        if let Some(&id) = self.mappings.get(&index) {
            return Ok(id);
        }
        let m = get(&self.dict.mapping_table, index, "location", "mapping_table")?;
        let file = string(self.dict, m.filename_strindex)?.to_owned();
        let mut build_id = String::new();
        for a in &m.attribute_indices {
            let attr = get(&self.dict.attribute_table, *a, "mapping", "attribute_table")?;
            if string(self.dict, attr.key_strindex)? == "process.executable.build_id.gnu" {
                build_id = any_text(self.dict, attr.value.as_ref()).unwrap_or_default();
            }
        }
        let id = self.tables.mapping(&file, &build_id, true);
        self.mappings.insert(index, id);
        Ok(id)
    }

    fn location(&mut self, index: i32) -> Result<u64, ConvertError> {
        if let Some(&id) = self.locations.get(&index) {
            return Ok(id);
        }
        let l = get(&self.dict.location_table, index, "stack", "location_table")?;
        let mapping = self.mapping(l.mapping_index)?;
        let mut lines = Vec::with_capacity(l.lines.len());
        for line in &l.lines {
            lines.push(Line {
                function_id: self.function(line.function_index)?,
                line: line.line,
                column: line.column,
            });
        }
        let id = self.tables.location(mapping, l.address, lines);
        self.locations.insert(index, id);
        Ok(id)
    }

    fn label(&mut self, index: i32) -> Result<Option<Label>, ConvertError> {
        let attr = get(
            &self.dict.attribute_table,
            index,
            "sample",
            "attribute_table",
        )?;
        let key = string(self.dict, attr.key_strindex)?.to_owned();
        let unit = string(self.dict, attr.unit_strindex)?.to_owned();
        Ok(match attr.value.as_ref().and_then(|v| v.value.as_ref()) {
            Some(any_value::Value::IntValue(i)) => Some(self.tables.num_label(&key, *i, &unit)),
            _ => any_text(self.dict, attr.value.as_ref()).map(|v| self.tables.str_label(&key, &v)),
        })
    }
}

fn convert_group(
    dict: &otlp::ProfilesDictionary,
    resource: &BTreeMap<String, String>,
    group: &[&otlp::Profile],
) -> Result<Converted, ConvertError> {
    let first = group[0];
    let mut attributes = resource.clone();
    for a in &first.attribute_indices {
        let attr = get(&dict.attribute_table, *a, "profile", "attribute_table")?;
        let key = string(dict, attr.key_strindex)?;
        if let Some(v) = any_text(dict, attr.value.as_ref()) {
            attributes.insert(key.to_owned(), v);
        }
    }
    let type_of = |p: &otlp::Profile| -> Result<(String, String), ConvertError> {
        let t = p.sample_type.unwrap_or_default();
        Ok((
            string(dict, t.type_strindex)?.to_owned(),
            string(dict, t.unit_strindex)?.to_owned(),
        ))
    };
    let (first_type, _) = type_of(first)?;
    let period = first.period_type.unwrap_or_default();
    let period_type = (
        string(dict, period.type_strindex)?.to_owned(),
        string(dict, period.unit_strindex)?.to_owned(),
    );
    let kind = match attributes.get(KIND_ATTRIBUTE) {
        Some(k) => crate::query::profiles::parse_kind(k).ok(),
        None => group
            .iter()
            .filter_map(|p| type_of(p).ok())
            .find_map(|(t, _)| kind_of(&t, &period_type.0)),
    }
    .ok_or_else(|| ConvertError::UnsupportedKind(first_type.clone()))?;
    let mut b = Builder {
        dict,
        tables: ProfileTables::new(),
        functions: HashMap::new(),
        mappings: HashMap::new(),
        locations: HashMap::new(),
    };
    let mut sample_type = Vec::with_capacity(group.len());
    for p in group {
        let (t, u) = type_of(p)?;
        sample_type.push(b.tables.value_type(&t, &u));
    }
    let n = group.len();
    // (stack, attributes) → values, one per sample type.
    let mut values: HashMap<(i32, Vec<i32>), (usize, Vec<i64>)> = HashMap::new();
    let mut order: Vec<(i32, Vec<i32>)> = Vec::new();
    for (t, p) in group.iter().enumerate() {
        for s in &p.samples {
            let key = (s.stack_index, s.attribute_indices.clone());
            let value: i64 = if s.values.is_empty() {
                i64::try_from(s.timestamps_unix_nano.len()).unwrap_or(i64::MAX)
            } else {
                s.values.iter().fold(0i64, |a, v| a.saturating_add(*v))
            };
            let entry = values.entry(key.clone()).or_insert_with(|| {
                order.push(key);
                (order.len() - 1, vec![0; n])
            });
            entry.1[t] = entry.1[t].saturating_add(value);
        }
    }
    let mut samples = Vec::with_capacity(order.len());
    for key in order {
        let Some((_, vals)) = values.remove(&key) else {
            continue;
        };
        let stack = get(&dict.stack_table, key.0, "sample", "stack_table")?;
        let mut location_id = Vec::with_capacity(stack.location_indices.len());
        for l in &stack.location_indices {
            location_id.push(b.location(*l)?);
        }
        let mut label = Vec::new();
        for a in &key.1 {
            label.extend(b.label(*a)?);
        }
        samples.push(Sample {
            location_id,
            value: vals,
            label,
        });
    }
    let period_value_type = b.tables.value_type(&period_type.0, &period_type.1);
    let profile = b.tables.into_profile(Profile {
        sample_type,
        sample: samples,
        time_nanos: i64::try_from(first.time_unix_nano).unwrap_or(i64::MAX),
        duration_nanos: i64::try_from(first.duration_nano).unwrap_or(i64::MAX),
        period_type: Some(period_value_type),
        period: first.period,
        ..Profile::default()
    });
    Ok(Converted {
        attributes,
        kind,
        started_unix_nanos: first.time_unix_nano,
        duration_nanos: first.duration_nano,
        pprof: prost::Message::encode_to_vec(&profile),
        profile_id: first.profile_id.clone(),
    })
}
