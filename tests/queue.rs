//! `--max-conns-per-node` over real sockets: a node never sees more requests at once than its
//! cap, the others wait in the relay's line and are served in the order they came, and one
//! that waits past `--queue-timeout` is answered 503 and sent nowhere. The backend holds each
//! request until the test opens a gate, so every wait is for an event.

mod common;

use bookrelay::json::Value;
use common::{ok_reply, Act, Client, FakeBackend, TestRelay};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Requests the backend may answer so far; each one waits until its turn is open.
#[derive(Default)]
struct Gate {
    open: Mutex<usize>,
    changed: Condvar,
}

impl Gate {
    fn pass(&self, index: usize) {
        let mut open = self.open.lock().expect("gate");
        while *open <= index {
            open = self.changed.wait(open).expect("gate");
        }
    }

    fn open_all(&self) {
        *self.open.lock().expect("gate") = usize::MAX;
        self.changed.notify_all();
    }
}

/// A backend that holds every request at the gate and records how many it held at once.
fn held_backend(
    gate: &Arc<Gate>,
    at_once: &Arc<AtomicUsize>,
    most: &Arc<AtomicUsize>,
) -> FakeBackend {
    let (gate, at_once, most) = (Arc::clone(gate), Arc::clone(at_once), Arc::clone(most));
    FakeBackend::start(move |_, index| {
        let now = at_once.fetch_add(1, Ordering::SeqCst) + 1;
        most.fetch_max(now, Ordering::SeqCst);
        gate.pass(index);
        at_once.fetch_sub(1, Ordering::SeqCst);
        Act::Reply(ok_reply("{}"))
    })
}

fn queue_field(relay: &TestRelay, field: &str) -> f64 {
    relay
        .status()
        .get("queue")
        .and_then(|q| q.get(field))
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("queue.{field} in status"))
}

/// Polls the relay's status until `queue.waiting` is `n` (an event the relay reports).
fn until_waiting(relay: &TestRelay, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while queue_field(relay, "waiting") != n as f64 {
        assert!(Instant::now() < deadline, "never {n} waiting");
        thread::yield_now();
    }
}

fn capped(backend: &FakeBackend, cap: usize, timeout: Duration) -> TestRelay {
    let addr = backend.addr.to_string();
    TestRelay::start(0, 0, "round-robin", move |c| {
        c.backends = vec![addr];
        c.max_conns_per_node = Some(cap);
        c.queue_timeout = timeout;
    })
}

#[test]
fn with_a_cap_of_one_the_node_sees_one_request_at_a_time_in_the_order_they_came() {
    let (gate, at_once, most) = Default::default();
    let backend = held_backend(&gate, &at_once, &most);
    let relay = capped(&backend, 1, Duration::from_secs(10));
    let answers: Vec<_> = (0..3)
        .map(|i| {
            let mut client = relay.client();
            let worker = thread::spawn(move || client.get(&format!("/order/{i}")).status);
            // The next client starts only once this one is at the node or in line.
            if i == 0 {
                let deadline = Instant::now() + Duration::from_secs(10);
                while backend.received().is_empty() {
                    assert!(Instant::now() < deadline, "the first request never arrived");
                    thread::yield_now();
                }
            } else {
                until_waiting(&relay, i);
            }
            worker
        })
        .collect();
    gate.open_all();
    for answer in answers {
        assert_eq!(answer.join().expect("client"), 200);
    }
    assert_eq!(most.load(Ordering::SeqCst), 1, "never two at the node");
    let paths: Vec<String> = backend
        .received()
        .iter()
        .map(|r| r.path().to_string())
        .collect();
    assert_eq!(
        paths,
        ["/order/0", "/order/1", "/order/2"],
        "first come, first served"
    );
    assert_eq!(queue_field(&relay, "waited"), 2.0);
    assert_eq!(queue_field(&relay, "timeouts"), 0.0);
    assert_eq!(queue_field(&relay, "cap"), 1.0);
    let metrics = common::admin(relay.addr, "GET", "/_relay/metrics", "").text();
    assert!(
        metrics.contains("bookrelay_queue_waited_total 2\n"),
        "{metrics}"
    );
}

#[test]
fn a_request_that_waits_past_the_queue_timeout_gets_a_503_and_is_sent_nowhere() {
    let (gate, at_once, most) = Default::default();
    let backend = held_backend(&gate, &at_once, &most);
    let relay = capped(&backend, 1, Duration::from_millis(200));
    let mut first = relay.client();
    let held = thread::spawn(move || first.get("/held").status);
    let deadline = Instant::now() + Duration::from_secs(10);
    while backend.received().is_empty() {
        assert!(Instant::now() < deadline, "the first request never arrived");
        thread::yield_now();
    }
    let mut second = Client::connect(relay.addr);
    let answer = second.get("/waits");
    assert_eq!(answer.status, 503);
    let error = answer.error();
    assert!(
        error.contains("--max-conns-per-node") && error.contains("200 ms"),
        "says why: {error}"
    );
    gate.open_all();
    assert_eq!(held.join().expect("client"), 200);
    assert_eq!(
        backend.received().len(),
        1,
        "the timed-out request reached no node"
    );
    assert_eq!(queue_field(&relay, "timeouts"), 1.0);
    assert_eq!(
        relay.client().get("/after").status,
        200,
        "the line is empty again"
    );
}
