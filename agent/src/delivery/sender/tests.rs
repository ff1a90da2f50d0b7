use std::time::Duration;

use holmes_proto::native::{Location, NativeSample, ValueType};
use holmes_proto::{Module, ProfileKind};
use prost::Message as _;

use super::*;

fn profile_msg(seq: u64, data: Vec<u8>, format: ProfileFormat, chunks: u32) -> AgentMessage {
    AgentMessage {
        seq,
        body: AgentBody::ProfileChunk(ProfileChunk {
            profile_id: "ab".repeat(16),
            event_id: "cd".repeat(16),
            kind: ProfileKind::Cpu,
            chunk_index: 0,
            chunk_count: chunks,
            total_bytes: data.len() as u64,
            data,
            started_unix_nanos: 1,
            duration: Duration::from_secs(1),
            error: None,
            labels: [("phase".to_owned(), "trigger".to_owned())].into(),
            format,
        }),
    }
}

fn native() -> NativeProfile {
    NativeProfile {
        sample_types: vec![ValueType::new("samples", "count")],
        modules: vec![Module {
            name: "app".into(),
            build_id: "ab".into(),
        }],
        locations: vec![Location::Native {
            module: 0,
            offset: 0x10,
        }],
        stacks: vec![vec![0]],
        samples: vec![NativeSample {
            stack: 0,
            values: vec![3],
            labels: Vec::new(),
        }],
        ..NativeProfile::default()
    }
}

fn sent(wire: pb::AgentMessage) -> crate::TestResult<(u64, ProfileChunk)> {
    match AgentMessage::try_from(wire)? {
        AgentMessage {
            seq,
            body: AgentBody::ProfileChunk(c),
        } => Ok((seq, c)),
        other => panic!("not a profile chunk: {other:?}"),
    }
}

#[test]
fn a_native_profile_in_one_chunk_goes_out_in_the_stream_form_and_the_rest_as_queued(
) -> crate::TestResult {
    let mut tables = StreamEncoder::sender();
    let bytes = native().encode();
    let (seq, first) = sent(stream_form(
        &mut tables,
        &profile_msg(7, bytes.clone(), ProfileFormat::Native, 1),
    ))?;
    assert_eq!((seq, first.format), (7, ProfileFormat::NativeStream));
    assert_eq!(first.total_bytes, first.data.len() as u64);
    assert_eq!(first.labels["phase"], "trigger");
    let wire = pb::NativeProfile::decode(first.data.as_slice())?;
    assert_eq!((wire.stacks.len(), wire.samples[0].values[0]), (1, 3));
    // The same stack again: defined once per stream.
    let (_, again) = sent(stream_form(
        &mut tables,
        &profile_msg(8, bytes.clone(), ProfileFormat::Native, 1),
    ))?;
    let wire = pb::NativeProfile::decode(again.data.as_slice())?;
    assert!(wire.stacks.is_empty() && wire.locations.is_empty());
    assert_eq!(wire.samples[0].stack, 0);
    // pprof, a profile in several chunks and a failed capture go as they are.
    for msg in [
        profile_msg(9, vec![1, 2, 3], ProfileFormat::PprofGzip, 1),
        profile_msg(10, bytes.clone(), ProfileFormat::Native, 2),
    ] {
        let (_, c) = sent(stream_form(&mut tables, &msg))?;
        assert_eq!(AgentBody::ProfileChunk(c), msg.body);
    }
    let mut failed = profile_msg(11, Vec::new(), ProfileFormat::Native, 1);
    if let AgentBody::ProfileChunk(c) = &mut failed.body {
        c.error = Some("cannot walk the stack".into());
    }
    let (_, c) = sent(stream_form(&mut tables, &failed))?;
    assert_eq!(AgentBody::ProfileChunk(c), failed.body);
    Ok(())
}
