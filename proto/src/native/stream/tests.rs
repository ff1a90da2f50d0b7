use super::*;
use crate::native::{NativeSample, SymbolicFrame, ValueType};

fn profile(stacks: &[&[u64]]) -> NativeProfile {
    let module = Module {
        name: "orders".into(),
        build_id: "ab12".into(),
    };
    let mut p = NativeProfile {
        sample_types: vec![ValueType::new("samples", "count")],
        period_type: ValueType::new("cpu", "nanoseconds"),
        period: 10_000_000,
        modules: vec![module],
        ..NativeProfile::default()
    };
    p.locations.push(Location::Symbolic(vec![SymbolicFrame {
        function: "main".into(),
        ..SymbolicFrame::default()
    }]));
    for (i, offsets) in stacks.iter().enumerate() {
        let mut stack = Vec::new();
        for &offset in offsets.iter() {
            let l = Location::Native { module: 0, offset };
            let index = match p.locations.iter().position(|x| *x == l) {
                Some(index) => index,
                None => {
                    p.locations.push(l);
                    p.locations.len() - 1
                }
            };
            stack.push(index as u32);
        }
        stack.push(0);
        p.stacks.push(stack);
        p.samples.push(NativeSample {
            stack: i as u32,
            values: vec![i as i64 + 1],
            labels: Vec::new(),
        });
    }
    p
}

fn decode(bytes: &[u8]) -> pb::NativeProfile {
    prost::Message::decode(bytes).unwrap()
}

#[test]
fn a_stream_defines_each_stack_once_and_samples_refer_to_its_tables() {
    let mut encoder = StreamEncoder::new();
    let first = decode(&encoder.encode(&profile(&[&[0x10, 0x20], &[0x30]])));
    assert_eq!(first.modules.len(), 1);
    assert_eq!(first.locations.len(), 4);
    assert_eq!(first.stacks.len(), 2);
    assert_eq!(
        first.samples.iter().map(|s| s.stack).collect::<Vec<_>>(),
        vec![0, 1]
    );
    assert!(!first.stream_reset);
    // The same stacks again: nothing but the header and samples goes out.
    let again = decode(&encoder.encode(&profile(&[&[0x30], &[0x10, 0x20]])));
    assert!(again.modules.is_empty() && again.locations.is_empty() && again.stacks.is_empty());
    assert_eq!(
        again.samples.iter().map(|s| s.stack).collect::<Vec<_>>(),
        vec![1, 0]
    );
    assert_eq!(again.samples[0].values, vec![1]);
    // A new stack is defined with the next numbers; what it shares is referred to.
    let third = decode(&encoder.encode(&profile(&[&[0x10, 0x40]])));
    assert_eq!(third.locations.len(), 1, "only 0x40 is new");
    assert_eq!(third.stacks.len(), 1);
    assert_eq!(third.stacks[0].locations, vec![1, 4, 0]);
    assert_eq!(third.samples[0].stack, 2);
    assert_eq!(encoder.stacks(), 3);
    // A new stream starts over.
    let fresh = decode(&StreamEncoder::new().encode(&profile(&[&[0x30]])));
    assert_eq!(fresh.stacks.len(), 1);
    assert_eq!(fresh.samples[0].stack, 0);
}

#[test]
fn tables_past_their_bounds_start_over_and_say_so() {
    // Room for 3 stacks: the second profile's 2 would make 4.
    let mut encoder = StreamEncoder::bounded(100, 3);
    let first = decode(&encoder.encode(&profile(&[&[0x10], &[0x20]])));
    assert!(!first.stream_reset);
    let second = decode(&encoder.encode(&profile(&[&[0x30], &[0x40]])));
    assert!(second.stream_reset, "the tables start over");
    assert_eq!((second.modules.len(), second.stacks.len()), (1, 2));
    assert_eq!(
        second.samples.iter().map(|s| s.stack).collect::<Vec<_>>(),
        vec![0, 1]
    );
    // The bounds hold after the reset too.
    let third = decode(&encoder.encode(&profile(&[&[0x30], &[0x50]])));
    assert!(third.stream_reset);
    assert!(StreamEncoder::fits(&profile(&[&[0x10]])));
}
