use super::*;

fn request(id: &str) -> CaptureRequest {
    CaptureRequest {
        request_id: id.to_owned(),
        kinds: Vec::new(),
        cpu_duration: None,
        purpose: holmes_proto::CapturePurpose::Operator,
        window: None,
        incident_id: None,
    }
}

#[test]
fn requests_wait_in_order_and_a_full_queue_refuses() -> crate::TestResult {
    let q = CaptureQueue::default();
    for i in 0..MAX_WAITING {
        assert!(q.push(request(&i.to_string()), format!("e{i}"), Origin::Host));
    }
    assert!(!q.push(request("late"), "e".into(), Origin::Collector));
    let first = q.pop().ok_or("the full queue popped nothing")?;
    assert_eq!(first.request.request_id, "0");
    q.push_front(first);
    assert_eq!(
        q.pop().ok_or("nothing popped after push_front")?.event_id,
        "e0"
    );
    assert_eq!(q.pop().ok_or("no second request")?.event_id, "e1");
    Ok(())
}

#[test]
fn one_capture_of_a_kind_per_interval() {
    let mut limit = RateLimit::new(Duration::from_secs(30));
    let t0 = Instant::now();
    assert_eq!(limit.refusal("cpu", t0), None);
    limit.started("cpu", t0);
    assert_eq!(
        limit.refusal("cpu", t0 + Duration::from_secs(12)),
        Some("at most one requested cpu capture per 30s; the last started 12s ago".into())
    );
    assert_eq!(limit.refusal("threads", t0), None, "per kind");
    assert_eq!(limit.refusal("cpu window", t0), None, "per kind");
    assert_eq!(limit.refusal("cpu", t0 + Duration::from_secs(30)), None);
}
