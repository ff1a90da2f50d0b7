//! Export as OTLP profiles (`v1development`, proto release v1.10.0): any stored
//! profile, or all of an incident's, as one `ExportProfilesServiceRequest`
//! (`application/x-protobuf`) — what an OTLP receiver takes, and what
//! `POST /v1development/profiles` of another collector takes back.
//!
//! | route | answer |
//! |---|---|
//! | `GET /api/v1/services/{service}/profiles/{profile_id}/otlp` | the profile |
//! | `GET /api/v1/incidents/{incident_id}/otlp` | the incident's profiles |
//!
//! Export reads the stored contents (never the original bytes, which are kept only on
//! request), through the same pprof form a download has ([`super::pprof::profile`]): each
//! location's frames as known when exported, a native location not yet symbolized as
//! its module + offset. A profile with several sample types becomes one OTLP profile per sample type
//! (OTLP has one each), sharing the profile id and start, which the OTLP ingest puts
//! back together ([`crate::ingest::otlp::to_pprof`]). Resource attributes: `service.name`,
//! `service.instance.id`; profile attributes: the profile's labels, `holmes.profile.kind`,
//! `holmes.profile.id`, `holmes.event.id`.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use holmes_api::{validate_profile_id, ErrorJson};
use holmes_proto::pprof;
use holmes_storage::ProfileRecord;
use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::profiles::v1development as otlp;
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use super::Api;
use crate::error::ApiError;
use crate::ingest::otlp::to_pprof::KIND_ATTRIBUTE;

/// What makes two locations the same: mapping, address, and lines (function, line, column).
type LocationKey = (i32, u64, Vec<(i32, i64, i64)>);

/// The dictionary of a request being built: each entry once, index 0 the empty one.
#[derive(Default)]
struct Dictionary {
    dict: otlp::ProfilesDictionary,
    strings: HashMap<String, i32>,
    functions: HashMap<(i32, i32, i32, i64), i32>,
    mappings: HashMap<(i32, i32), i32>,
    locations: HashMap<LocationKey, i32>,
    stacks: HashMap<Vec<i32>, i32>,
    attributes: HashMap<(i32, String), i32>,
}

fn index(len: usize) -> i32 {
    i32::try_from(len).unwrap_or(i32::MAX)
}

impl Dictionary {
    fn new() -> Self {
        let mut d = Dictionary::default();
        d.string("");
        d.dict.mapping_table.push(otlp::Mapping::default());
        d.dict.location_table.push(otlp::Location::default());
        d.dict.function_table.push(otlp::Function::default());
        d.dict.link_table.push(otlp::Link::default());
        d.dict
            .attribute_table
            .push(otlp::KeyValueAndUnit::default());
        d.dict.stack_table.push(otlp::Stack::default());
        d
    }

    fn string(&mut self, s: &str) -> i32 {
        if let Some(&i) = self.strings.get(s) {
            return i;
        }
        let i = index(self.dict.string_table.len());
        self.dict.string_table.push(s.to_owned());
        self.strings.insert(s.to_owned(), i);
        i
    }

    fn attribute(&mut self, key: &str, value: &str) -> i32 {
        let k = self.string(key);
        if let Some(&i) = self.attributes.get(&(k, value.to_owned())) {
            return i;
        }
        let i = index(self.dict.attribute_table.len());
        self.dict.attribute_table.push(otlp::KeyValueAndUnit {
            key_strindex: k,
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(value.to_owned())),
            }),
            unit_strindex: 0,
        });
        self.attributes.insert((k, value.to_owned()), i);
        i
    }

    fn num_attribute(&mut self, key: &str, value: i64, unit: &str) -> i32 {
        let k = self.string(key);
        let u = self.string(unit);
        let i = index(self.dict.attribute_table.len());
        self.dict.attribute_table.push(otlp::KeyValueAndUnit {
            key_strindex: k,
            value: Some(AnyValue {
                value: Some(any_value::Value::IntValue(value)),
            }),
            unit_strindex: u,
        });
        i
    }
}

/// One pprof string of `p`.
fn text(p: &pprof::Profile, i: i64) -> &str {
    usize::try_from(i)
        .ok()
        .and_then(|i| p.string_table.get(i))
        .map_or("", String::as_str)
}

/// The OTLP profiles of one stored profile (one per sample type), its entries added to
/// `d`; an error names what is inconsistent.
fn profiles_of(record: &ProfileRecord, d: &mut Dictionary) -> Result<Vec<otlp::Profile>, String> {
    let contents = record
        .contents
        .as_ref()
        .ok_or_else(|| "it was stored without contents".to_owned())?;
    let p = super::pprof::profile(contents);
    let functions: HashMap<u64, &pprof::Function> = p.function.iter().map(|f| (f.id, f)).collect();
    let mappings: HashMap<u64, &pprof::Mapping> = p.mapping.iter().map(|m| (m.id, m)).collect();
    let locations: HashMap<u64, &pprof::Location> = p.location.iter().map(|l| (l.id, l)).collect();
    let mut location_index: HashMap<u64, i32> = HashMap::new();
    let mut stacks = Vec::with_capacity(p.sample.len());
    let mut sample_attrs = Vec::with_capacity(p.sample.len());
    for s in &p.sample {
        let mut indices = Vec::with_capacity(s.location_id.len());
        for id in &s.location_id {
            if let Some(&i) = location_index.get(id) {
                indices.push(i);
                continue;
            }
            let l = locations
                .get(id)
                .ok_or_else(|| format!("a sample refers to location {id}, which does not exist"))?;
            let mapping_index = match mappings.get(&l.mapping_id) {
                Some(m) => {
                    let key = (
                        d.string(text(&p, m.filename)),
                        d.string(text(&p, m.build_id)),
                    );
                    match d.mappings.get(&key) {
                        Some(&i) => i,
                        None => {
                            let i = index(d.dict.mapping_table.len());
                            let mut attribute_indices = Vec::new();
                            if !text(&p, m.build_id).is_empty() {
                                attribute_indices.push(d.attribute(
                                    "process.executable.build_id.gnu",
                                    text(&p, m.build_id),
                                ));
                            }
                            d.dict.mapping_table.push(otlp::Mapping {
                                memory_start: m.memory_start,
                                memory_limit: m.memory_limit,
                                file_offset: m.file_offset,
                                filename_strindex: key.0,
                                attribute_indices,
                            });
                            d.mappings.insert(key, i);
                            i
                        }
                    }
                }
                None => 0,
            };
            let mut lines = Vec::with_capacity(l.line.len());
            for line in &l.line {
                let f = functions.get(&line.function_id).ok_or_else(|| {
                    format!(
                        "a location refers to function {}, which does not exist",
                        line.function_id
                    )
                })?;
                let key = (
                    d.string(text(&p, f.name)),
                    d.string(text(&p, f.system_name)),
                    d.string(text(&p, f.filename)),
                    f.start_line,
                );
                let function_index = match d.functions.get(&key) {
                    Some(&i) => i,
                    None => {
                        let i = index(d.dict.function_table.len());
                        d.dict.function_table.push(otlp::Function {
                            name_strindex: key.0,
                            system_name_strindex: key.1,
                            filename_strindex: key.2,
                            start_line: key.3,
                        });
                        d.functions.insert(key, i);
                        i
                    }
                };
                lines.push((function_index, line.line, line.column));
            }
            let key = (mapping_index, l.address, lines);
            let i = match d.locations.get(&key) {
                Some(&i) => i,
                None => {
                    let i = index(d.dict.location_table.len());
                    d.dict.location_table.push(otlp::Location {
                        mapping_index,
                        address: l.address,
                        lines: key
                            .2
                            .iter()
                            .map(|(f, line, column)| otlp::Line {
                                function_index: *f,
                                line: *line,
                                column: *column,
                            })
                            .collect(),
                        attribute_indices: Vec::new(),
                    });
                    d.locations.insert(key, i);
                    i
                }
            };
            location_index.insert(*id, i);
            indices.push(i);
        }
        let stack = match d.stacks.get(&indices) {
            Some(&i) => i,
            None => {
                let i = index(d.dict.stack_table.len());
                d.dict.stack_table.push(otlp::Stack {
                    location_indices: indices.clone(),
                });
                d.stacks.insert(indices, i);
                i
            }
        };
        stacks.push(stack);
        let attrs: Vec<i32> = s
            .label
            .iter()
            .map(|l| {
                let key = text(&p, l.key).to_owned();
                if l.str != 0 {
                    let value = text(&p, l.str).to_owned();
                    d.attribute(&key, &value)
                } else {
                    let unit = text(&p, l.num_unit).to_owned();
                    d.num_attribute(&key, l.num, &unit)
                }
            })
            .collect();
        sample_attrs.push(attrs);
    }
    let mut attributes = vec![
        d.attribute(KIND_ATTRIBUTE, record.kind.as_str()),
        d.attribute("holmes.profile.id", &record.profile_id),
        d.attribute("holmes.event.id", &record.event_id),
    ];
    for (k, v) in &record.labels {
        attributes.push(d.attribute(k, v));
    }
    let profile_id: Vec<u8> = (0..record.profile_id.len() / 2)
        .filter_map(|i| u8::from_str_radix(record.profile_id.get(2 * i..2 * i + 2)?, 16).ok())
        .collect();
    let period_type = p.period_type.map(|t| otlp::ValueType {
        type_strindex: d.string(text(&p, t.r#type)),
        unit_strindex: d.string(text(&p, t.unit)),
    });
    let mut out = Vec::with_capacity(p.sample_type.len());
    for (t, vt) in p.sample_type.iter().enumerate() {
        out.push(otlp::Profile {
            sample_type: Some(otlp::ValueType {
                type_strindex: d.string(text(&p, vt.r#type)),
                unit_strindex: d.string(text(&p, vt.unit)),
            }),
            samples: p
                .sample
                .iter()
                .zip(&stacks)
                .zip(&sample_attrs)
                .map(|((s, stack), attrs)| otlp::Sample {
                    stack_index: *stack,
                    attribute_indices: attrs.clone(),
                    link_index: 0,
                    values: vec![s.value.get(t).copied().unwrap_or(0)],
                    timestamps_unix_nano: Vec::new(),
                })
                .collect(),
            time_unix_nano: record.started_unix_nanos,
            duration_nano: u64::try_from(record.duration.as_nanos()).unwrap_or(u64::MAX),
            period_type,
            period: p.period,
            profile_id: profile_id.clone(),
            dropped_attributes_count: 0,
            original_payload_format: String::new(),
            original_payload: Vec::new(),
            attribute_indices: attributes.clone(),
        });
    }
    Ok(out)
}

/// `records` as one OTLP export request, a resource per service and instance.
pub fn export_request(records: &[ProfileRecord]) -> Result<ExportProfilesServiceRequest, String> {
    let mut d = Dictionary::new();
    let mut resources: Vec<otlp::ResourceProfiles> = Vec::new();
    let mut by_instance: HashMap<(String, String), usize> = HashMap::new();
    for record in records
        .iter()
        .filter(|r| r.error.is_none() && r.contents.is_some())
    {
        let profiles = profiles_of(record, &mut d)
            .map_err(|e| format!("profile {}: {e}", record.profile_id))?;
        let key = (record.service.clone(), record.instance_id.clone());
        let at = *by_instance.entry(key).or_insert_with(|| {
            let kv = |k: &str, v: &str| KeyValue {
                key: k.to_owned(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(v.to_owned())),
                }),
                key_strindex: 0,
            };
            resources.push(otlp::ResourceProfiles {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", &record.service),
                        kv("service.instance.id", &record.instance_id),
                    ],
                    ..Resource::default()
                }),
                scope_profiles: vec![otlp::ScopeProfiles {
                    scope: Some(InstrumentationScope {
                        name: "holmes".to_owned(),
                        version: env!("CARGO_PKG_VERSION").to_owned(),
                        ..InstrumentationScope::default()
                    }),
                    profiles: Vec::new(),
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            });
            resources.len() - 1
        });
        resources[at].scope_profiles[0].profiles.extend(profiles);
    }
    Ok(ExportProfilesServiceRequest {
        resource_profiles: resources,
        dictionary: Some(d.dict),
    })
}

fn otlp_response(request: &ExportProfilesServiceRequest, file_name: &str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/x-protobuf".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file_name}\""),
            ),
        ],
        request.encode_to_vec(),
    )
        .into_response()
}

fn unexportable(why: &str) -> ApiError {
    ApiError {
        status: axum::http::StatusCode::UNPROCESSABLE_ENTITY,
        message: format!("cannot export as OTLP: {why}"),
    }
}

/// One profile as OTLP.
///
/// Any stored profile, as one OTLP `ExportProfilesServiceRequest` (OTLP proto v1.10.0,
/// `opentelemetry.proto.collector.profiles.v1development`): a resource for its service
/// and instance, its labels and `holmes.profile.kind`, `holmes.profile.id`,
/// `holmes.event.id` as attributes.
#[utoipa::path(
    get,
    path = "/api/v1/services/{service}/profiles/{profile_id}/otlp",
    operation_id = "export_profile_otlp",
    tag = "profiles",
    params(
        ("service" = String, Path, description = "Service the profile belongs to"),
        ("profile_id" = String, Path, description = "Profile id: 32 lowercase hex digits"),
    ),
    responses(
        (status = 200, description = "The profile as an OTLP ExportProfilesServiceRequest", content_type = "application/x-protobuf", body = Vec<u8>),
        (status = 400, description = "Not a service name or profile id", body = ErrorJson),
        (status = 401, description = "API token required", body = ErrorJson),
        (status = 404, description = "The service has no such profile, or its capture failed", body = ErrorJson),
        (status = 422, description = "The profile cannot be expressed as OTLP", body = ErrorJson),
        (status = 503, description = "Store unavailable", body = ErrorJson),
    )
)]
pub(super) async fn profile(
    State(api): State<Api>,
    Path((service, profile_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    super::check_service(&service)?;
    validate_profile_id(&profile_id).map_err(ApiError::bad_request)?;
    let Some(record) = api.store.get_profile(&service, &profile_id).await? else {
        return Err(ApiError::not_found(format!(
            "service {service:?} has no profile {profile_id:?}"
        )));
    };
    if let Some(error) = &record.error {
        return Err(ApiError::not_found(format!(
            "profile {profile_id} has no data: its capture failed: {error}"
        )));
    }
    let request = export_request(std::slice::from_ref(&record)).map_err(|e| unexportable(&e))?;
    Ok(otlp_response(
        &request,
        &format!("{}.{}.otlp.pb", record.kind.as_str(), record.profile_id),
    ))
}

/// An incident's profiles as OTLP.
///
/// Every profile captured for the incident, in one OTLP `ExportProfilesServiceRequest`:
/// a resource per service and instance.
#[utoipa::path(
    get,
    path = "/api/v1/incidents/{incident_id}/otlp",
    operation_id = "export_incident_otlp",
    tag = "incidents",
    params(("incident_id" = String, Path, description = "Incident id: 32 lowercase hex digits")),
    responses(
        (status = 200, description = "The incident's profiles as an OTLP ExportProfilesServiceRequest", content_type = "application/x-protobuf", body = Vec<u8>),
        (status = 400, description = "Not an incident id", body = ErrorJson),
        (status = 401, description = "API token required", body = ErrorJson),
        (status = 404, description = "Unknown incident, or one without profiles", body = ErrorJson),
        (status = 422, description = "A profile cannot be expressed as OTLP", body = ErrorJson),
        (status = 503, description = "Store unavailable", body = ErrorJson),
    )
)]
pub(super) async fn incident(
    State(api): State<Api>,
    Path(incident_id): Path<String>,
) -> Result<Response, ApiError> {
    let incident = super::incidents::incident_of(&api, &incident_id).await?;
    let listed = super::incidents::profiles_of(&api, &incident).await?;
    let ids: Vec<String> = listed
        .iter()
        .filter(|p| p.error.is_none())
        .map(|p| p.profile_id.clone())
        .collect();
    let records = api.store.get_profiles(&incident.service, &ids).await?;
    if records.is_empty() {
        return Err(ApiError::not_found(format!(
            "incident {incident_id} has no profiles"
        )));
    }
    let request = export_request(&records).map_err(|e| unexportable(&e))?;
    Ok(otlp_response(
        &request,
        &format!("incident.{incident_id}.otlp.pb"),
    ))
}
