//! Round trips and refusals of the wire conversions.

use super::*;
use prost::Message;

fn rule() -> RuleConfig {
    RuleConfig {
        metric: Metric::CpuPercent,
        enabled: true,
        min: 10.0,
        diff: 25.0,
        abs: 70.0,
        max: 0.0,
        cooldown: Duration::from_secs(60),
        window: 10,
    }
}

fn roundtrip(msg: &AgentMessage) -> AgentMessage {
    let bytes = pb::AgentMessage::from(msg).encode_to_vec();
    AgentMessage::try_from(pb::AgentMessage::decode(bytes.as_slice()).unwrap()).unwrap()
}

#[test]
fn pipeline_events_round_trip_and_bad_ones_are_refused() {
    let profile = PipelineEvent {
        service: "checkout".to_owned(),
        instance_id: "checkout-1".to_owned(),
        body: PipelineBody::Profile(PipelineProfile {
            profile_id: "p1".to_owned(),
            event_id: "e1".to_owned(),
            kind: ProfileKind::Cpu,
            started_unix_nanos: 7,
            duration: Duration::from_nanos(2_000_000_001),
            labels: [("phase".to_owned(), "trigger".to_owned())].into(),
            error: None,
            // More than one chunk's worth: a whole profile travels as one event.
            data: vec![5; crate::MAX_CHUNK_BYTES + 1],
            format: ProfileFormat::Native,
        }),
    };
    assert_eq!(PipelineEvent::decode(&profile.encode()).unwrap(), profile);
    let trigger = PipelineEvent {
        service: "checkout".to_owned(),
        instance_id: "checkout-1".to_owned(),
        body: PipelineBody::Trigger(TriggerEvent {
            event_id: "e1".to_owned(),
            metric: Some(Metric::CpuPercent),
            reason: TriggerReason::Abs,
            current: 97.5,
            window: vec![Sample {
                unix_nanos: 1,
                value: 3.0,
            }],
            rule: None,
            unix_nanos: 9,
            planned: vec![ProfileKind::Cpu],
            request_id: None,
        }),
    };
    assert_eq!(PipelineEvent::decode(&trigger.encode()).unwrap(), trigger);
    let mut raw = pb::PipelineEvent::from(&trigger);
    raw.body = None;
    let err = PipelineEvent::decode(&raw.encode_to_vec()).unwrap_err();
    assert_eq!(err, DecodeError::Missing("pipeline.body"));
    assert!(PipelineEvent::decode(b"\xff\xff").is_err());
}

#[test]
fn every_agent_message_survives_the_wire() {
    let hello = AgentMessage {
        seq: 1,
        body: AgentBody::Hello(Hello {
            protocol_version: crate::PROTOCOL_VERSION,
            service: "checkout".into(),
            instance_id: "checkout-1".into(),
            host: "node-a".into(),
            pid: 4242,
            labels: [("region".to_owned(), "eu".to_owned())].into(),
            agent_version: "0.1.0".into(),
            rules: vec![rule()],
            started_at_unix_nanos: 7,
            collect_interval: Duration::from_secs(1),
            rules_version: 12,
            executable: Some(Module {
                name: "checkout".into(),
                build_id: "0badc0de".into(),
            }),
            debuginfo_upload: true,
        }),
    };
    let window = AgentMessage {
        seq: 2,
        body: AgentBody::MetricWindow(MetricWindow {
            series: vec![MetricSeries {
                metric: Metric::RssBytes,
                samples: vec![Sample {
                    unix_nanos: 1,
                    value: 2.5,
                }],
            }],
        }),
    };
    let trigger = AgentMessage {
        seq: 3,
        body: AgentBody::Trigger(TriggerEvent {
            event_id: "ev-1".into(),
            metric: Some(Metric::CpuPercent),
            reason: TriggerReason::Diff,
            current: 91.0,
            window: vec![Sample {
                unix_nanos: 3,
                value: 91.0,
            }],
            rule: Some(rule()),
            unix_nanos: 3,
            planned: vec![ProfileKind::Cpu, ProfileKind::Threads],
            request_id: None,
        }),
    };
    let chunk = AgentMessage {
        seq: 4,
        body: AgentBody::ProfileChunk(ProfileChunk {
            profile_id: "p-1".into(),
            event_id: "ev-1".into(),
            kind: ProfileKind::Heap,
            chunk_index: 1,
            chunk_count: 2,
            total_bytes: 10,
            data: vec![1, 2, 3],
            started_unix_nanos: 5,
            duration: Duration::from_millis(300),
            error: None,
            labels: Default::default(),
            format: ProfileFormat::Native,
        }),
    };
    let beat = AgentMessage {
        seq: 5,
        body: AgentBody::Heartbeat(Heartbeat {
            unix_nanos: 9,
            dropped_messages: 1,
            unacked_messages: 2,
            rules_version: 12,
        }),
    };
    let applied = AgentMessage {
        seq: 0,
        body: AgentBody::ConfigApplied(ConfigApplied {
            version: 12,
            refused: vec![RuleRefusal {
                metric: Metric::Threads,
                reason: "cooldown 0s is below the floor of 10s".into(),
            }],
        }),
    };
    let outcome = AgentMessage {
        seq: 0,
        body: AgentBody::CaptureOutcome(CaptureOutcome {
            request_id: "r-1".into(),
            event_id: Some("ev-2".into()),
            captured: vec![ProfileKind::Cpu],
            refused: vec![CaptureRefusal {
                kind: ProfileKind::Tasks,
                reason: RefusalReason::Unsupported,
                detail: "built without task dumps".into(),
            }],
        }),
    };
    let debuginfo = AgentMessage {
        seq: 0,
        body: AgentBody::DebugInfoChunk(DebugInfoChunk {
            build_id: "0badc0de".into(),
            offset: 4,
            total_bytes: 7,
            data: vec![1, 2, 3],
        }),
    };
    let baseline = AgentMessage {
        seq: 6,
        body: AgentBody::Trigger(TriggerEvent {
            event_id: "ev-3".into(),
            metric: None,
            reason: TriggerReason::Baseline,
            current: 0.0,
            window: vec![],
            rule: None,
            unix_nanos: 3,
            planned: vec![ProfileKind::Cpu],
            request_id: None,
        }),
    };
    for msg in [
        hello, window, trigger, chunk, beat, applied, outcome, debuginfo, baseline,
    ] {
        assert_eq!(roundtrip(&msg), msg);
    }
}

#[test]
fn every_collector_message_survives_the_wire() {
    for msg in [
        CollectorMessage::Ack { seq: 42 },
        CollectorMessage::ConfigUpdate(ConfigUpdate {
            version: 3,
            rules: vec![rule()],
            replace: true,
            pause: Some(CapturePause {
                until_unix_nanos: 99,
                reason: "deploy".into(),
            }),
        }),
        CollectorMessage::CaptureRequest(CaptureRequest {
            request_id: "r-1".into(),
            kinds: vec![ProfileKind::Cpu],
            cpu_duration: Some(Duration::from_secs(5)),
            purpose: CapturePurpose::Operator,
            window: None,
            incident_id: None,
        }),
        CollectorMessage::CaptureRequest(CaptureRequest {
            request_id: "r-2".into(),
            kinds: vec![ProfileKind::Cpu, ProfileKind::Heap],
            cpu_duration: None,
            purpose: CapturePurpose::Control,
            window: Some(TimeWindow {
                start_unix_nanos: 10,
                end_unix_nanos: 20,
            }),
            incident_id: Some("inc-1".into()),
        }),
        CollectorMessage::DebugInfoRequest(DebugInfoRequest {
            build_id: "0badc0de".into(),
            offset: 1 << 20,
        }),
        CollectorMessage::SkipProfiles(SkipProfiles {
            event_id: "ev-1".into(),
            kinds: vec![],
        }),
    ] {
        let bytes = pb::CollectorMessage::from(&msg).encode_to_vec();
        let back =
            CollectorMessage::try_from(pb::CollectorMessage::decode(bytes.as_slice()).unwrap())
                .unwrap();
        assert_eq!(back, msg);
    }
}

#[test]
fn rejects_what_protobuf_lets_through() {
    let empty = pb::AgentMessage { seq: 1, body: None };
    assert_eq!(
        AgentMessage::try_from(empty).unwrap_err().to_string(),
        "agent message body is missing"
    );
    let unknown_metric = pb::AgentMessage {
        seq: 1,
        body: Some(agent_message::Body::MetricWindow(pb::MetricWindow {
            series: vec![pb::MetricSeries {
                metric: 999,
                samples: vec![],
            }],
        })),
    };
    assert_eq!(
        AgentMessage::try_from(unknown_metric).unwrap_err(),
        DecodeError::UnknownEnum {
            field: "series.metric",
            value: 999
        }
    );
    let bad_chunk = pb::ProfileChunk {
        profile_id: "p".into(),
        kind: pb::ProfileKind::Cpu as i32,
        chunk_index: 2,
        chunk_count: 2,
        ..Default::default()
    };
    assert!(ProfileChunk::try_from(bad_chunk).is_err());
    let backwards = pb::CollectorMessage {
        body: Some(pb::collector_message::Body::CaptureRequest(
            pb::CaptureRequest {
                request_id: "r".into(),
                window_start_unix_nanos: 20,
                window_end_unix_nanos: 10,
                ..Default::default()
            },
        )),
    };
    assert!(CollectorMessage::try_from(backwards).is_err());
    let overflowing = pb::DebugInfoChunk {
        build_id: "b".into(),
        offset: 5,
        total_bytes: 6,
        data: vec![0; 2],
    };
    assert!(DebugInfoChunk::try_from(overflowing).is_err());
}

#[test]
fn native_profiles_survive_the_wire_and_dangling_indexes_are_refused() {
    use crate::native::*;
    let profile = NativeProfile {
        sample_types: vec![
            ValueType::new("samples", "count"),
            ValueType::new("cpu", "nanoseconds"),
        ],
        period_type: ValueType::new("cpu", "nanoseconds"),
        period: 52_631_578,
        time_unix_nanos: 1_700_000_000_000_000_000,
        duration_nanos: 2_000_000_000,
        comments: vec!["phase=trigger".into()],
        modules: vec![Module {
            name: "checkout".into(),
            build_id: "0badc0de".into(),
        }],
        locations: vec![
            Location::Native {
                module: 0,
                offset: 0x1234,
            },
            Location::Symbolic(vec![SymbolicFrame {
                function: "tokio::runtime::park".into(),
                file: "park.rs".into(),
                line: 7,
            }]),
        ],
        stacks: vec![vec![0, 1], vec![1]],
        samples: vec![NativeSample {
            stack: 0,
            values: vec![3, 157_894_734],
            labels: vec![ProfileLabel {
                key: "thread".into(),
                str: "worker-1".into(),
                num: 0,
                unit: String::new(),
            }],
        }],
    };
    assert_eq!(NativeProfile::decode(&profile.encode()).unwrap(), profile);
    for broken in [
        NativeProfile {
            stacks: vec![vec![0, 2]],
            ..profile.clone()
        },
        NativeProfile {
            locations: vec![Location::Native {
                module: 1,
                offset: 0,
            }],
            ..profile.clone()
        },
        NativeProfile {
            locations: vec![Location::Symbolic(vec![])],
            ..profile.clone()
        },
        NativeProfile {
            samples: vec![NativeSample {
                stack: 2,
                values: vec![1, 1],
                labels: vec![],
            }],
            ..profile.clone()
        },
        NativeProfile {
            samples: vec![NativeSample {
                stack: 0,
                values: vec![1],
                labels: vec![],
            }],
            ..profile.clone()
        },
    ] {
        let err = NativeProfile::decode(&broken.encode()).unwrap_err();
        assert!(err.to_string().contains("native profile"), "{err}");
    }
}

#[test]
fn metric_names_parse_back() {
    for m in Metric::ALL {
        assert_eq!(m.as_str().parse::<Metric>(), Ok(m));
    }
    assert!("cpu%".parse::<Metric>().is_err());
}
