//! Conformance cases of debug info uploads: chunks resumed and completed, a CI upload
//! beside an agent's, the upload claim, and the native locations left to symbolize.

use std::time::Duration;

use holmes_proto::Module;

use super::profiles::{cpu_contents, profile_id, record};
use super::T0;
use crate::{DebugInfoChunkRecord, DebugInfoSource, Location, StackFrame, Store};

fn chunk(
    build: &str,
    source: DebugInfoSource,
    blob: &[u8],
    from: usize,
    to: usize,
) -> DebugInfoChunkRecord {
    DebugInfoChunkRecord {
        build_id: build.to_owned(),
        source,
        offset: from as u64,
        total_bytes: blob.len() as u64,
        data: blob[from..to].to_vec(),
    }
}

/// Bytes that are not text, with every value.
fn blob(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// An agent's upload arrives in chunks over several streams: the store says how far it
/// got (resuming from there), keeps a chunk sent twice once, and gives the whole blob
/// back once complete; a CI upload of the same build beside it never mixes with it.
pub async fn debuginfo_uploads_resume_and_complete(store: impl Store) {
    use DebugInfoSource::*;
    let build = "1f2e3d4c5b6a79880796a5b4c3d2e1f0aabbccdd";
    assert_eq!(store.debuginfo_status(build).await.unwrap(), None);
    assert_eq!(store.read_debuginfo(build).await.unwrap(), None);
    let agent = blob(1000, 7);
    store
        .insert_debuginfo(&[chunk(build, Agent, &agent, 0, 300)])
        .await
        .unwrap();
    // Sent again after a lost stream, and a piece past a gap.
    store
        .insert_debuginfo(&[chunk(build, Agent, &agent, 0, 300)])
        .await
        .unwrap();
    store
        .insert_debuginfo(&[chunk(build, Agent, &agent, 600, 1000)])
        .await
        .unwrap();
    let status = store.debuginfo_status(build).await.unwrap().unwrap();
    assert_eq!(
        (
            status.source,
            status.stored_bytes,
            status.total_bytes,
            status.complete()
        ),
        (Agent, 300, 1000, false)
    );
    assert_eq!(store.read_debuginfo(build).await.unwrap(), None);
    assert!(store.debuginfo_builds().await.unwrap().is_empty());
    // Another build's bytes stay apart.
    let other = blob(10, 1);
    store
        .insert_debuginfo(&[chunk("0badc0de", Agent, &other, 0, 10)])
        .await
        .unwrap();
    // Resumed from 300 by another agent of the build.
    store
        .insert_debuginfo(&[chunk(build, Agent, &agent, 300, 600)])
        .await
        .unwrap();
    let status = store.debuginfo_status(build).await.unwrap().unwrap();
    assert_eq!((status.stored_bytes, status.complete()), (1000, true));
    assert_eq!(
        store.read_debuginfo(build).await.unwrap(),
        Some(agent.clone())
    );
    assert_eq!(
        store.debuginfo_builds().await.unwrap(),
        vec!["0badc0de".to_owned(), build.to_owned()]
    );
    assert_eq!(store.read_debuginfo("0badc0de").await.unwrap(), Some(other));

    // A build whose agent upload stopped half-way, then uploaded whole from CI (another
    // blob: the sections of a separate debug file): the CI one is what reads give.
    let build2 = "aa00";
    let partial = blob(500, 3);
    let ci = blob(700, 9);
    store
        .insert_debuginfo(&[chunk(build2, Agent, &partial, 0, 200)])
        .await
        .unwrap();
    let mut whole: Vec<_> = (0..700)
        .step_by(256)
        .map(|at| chunk(build2, Upload, &ci, at, (at + 256).min(700)))
        .collect();
    whole.reverse();
    store.insert_debuginfo(&whole).await.unwrap();
    let status = store.debuginfo_status(build2).await.unwrap().unwrap();
    assert_eq!((status.source, status.complete()), (Upload, true));
    assert_eq!(store.read_debuginfo(build2).await.unwrap(), Some(ci));
}

/// One collector at a time holds a build's upload claim: others are refused until it
/// gives it back or its lease lapses; its holder refreshes it.
pub async fn debuginfo_claims_have_one_holder(store: impl Store) {
    let lease = Duration::from_secs(600);
    let build = "feedface";
    assert!(store
        .claim_debuginfo_upload(build, "collector-a", lease)
        .await
        .unwrap());
    assert!(!store
        .claim_debuginfo_upload(build, "collector-b", lease)
        .await
        .unwrap());
    // Its holder refreshes it, and still holds it against newcomers.
    assert!(store
        .claim_debuginfo_upload(build, "collector-a", lease)
        .await
        .unwrap());
    assert!(!store
        .claim_debuginfo_upload(build, "collector-b", lease)
        .await
        .unwrap());
    // Another build's claim is another claim.
    assert!(store
        .claim_debuginfo_upload("beef", "collector-b", lease)
        .await
        .unwrap());
    store
        .release_debuginfo_upload(build, "collector-a")
        .await
        .unwrap();
    assert!(store
        .claim_debuginfo_upload(build, "collector-b", lease)
        .await
        .unwrap());
    assert!(!store
        .claim_debuginfo_upload(build, "collector-a", lease)
        .await
        .unwrap());
    // A claim whose lease lapsed (its collector died) is no claim.
    assert!(store
        .claim_debuginfo_upload("cafe", "collector-c", Duration::ZERO)
        .await
        .unwrap());
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(store
        .claim_debuginfo_upload("cafe", "collector-a", lease)
        .await
        .unwrap());
}

/// The native locations of a build without symbols are what is left to symbolize:
/// each once, those of other modules not among them, fewer as symbols arrive.
pub async fn unsymbolized_offsets_shrink_as_symbols_arrive(store: impl Store) {
    assert!(store.unsymbolized_offsets("b1").await.unwrap().is_empty());
    for (n, service) in [(1, "checkout"), (2, "checkout"), (3, "cart")] {
        store
            .insert_profile(&record(
                service,
                "a",
                &profile_id(n),
                "e",
                T0,
                Some(cpu_contents("b1", n)),
            ))
            .await
            .unwrap();
    }
    assert_eq!(
        store.unsymbolized_offsets("b1").await.unwrap(),
        vec![0x1_0040, 0x1_2345]
    );
    assert_eq!(
        store.unsymbolized_offsets("c0ffee").await.unwrap(),
        vec![0x29d8f]
    );
    let leaf = Location::Native {
        module: Module {
            name: "checkout".to_owned(),
            build_id: "b1".to_owned(),
        },
        offset: 0x1_2345,
    };
    store
        .insert_symbols(&[(
            leaf.id(),
            vec![StackFrame::new("checkout::f", "src/f.rs", 1)],
        )])
        .await
        .unwrap();
    assert_eq!(
        store.unsymbolized_offsets("b1").await.unwrap(),
        vec![0x1_0040]
    );
    assert!(store.unsymbolized_offsets("b2").await.unwrap().is_empty());
}
