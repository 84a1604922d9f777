//! Scenario 17: how long writes stall when one member of a three-member etcd cluster dies,
//! against etcd's own stall in the same trial.
//!
//! Two masters, given all three endpoints, take 100 creates/s between them; beside them a raw
//! writer puts 100 keys/s, each to a member it knows is up. Each trial kills one member
//! (alternately raft's leader and a follower), keeps it down, and starts it again. A writer's
//! stall is the time from the kill until writes succeed again for good: the later of the
//! first acknowledgement of a write sent after the kill and the sending of the last write
//! that failed. The raw writer's stall is etcd's part (a raft election when its leader dies);
//! what the masters add is their clients' part: noticing a dead member and going elsewhere.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::Client;
use tokio_util::sync::CancellationToken;

use super::harness::{create, http_client, is_ready, wait_until};
use super::report::{Report, ms};
use crate::tools::member::EtcdCluster;
use crate::tools::procs::{self, Scratch, ToolError};

/// One write: when it was sent, and when a success came back (`None` while it waits, and
/// when it failed).
#[derive(Debug, Clone, Copy)]
struct Write {
    sent: Instant,
    acked: Option<Instant>,
}

type Writes = Arc<Mutex<Vec<Write>>>;

/// How long writes stalled after `killed`: until the later of the first success of a write
/// sent since and the sending of the last write that failed or is still waiting, among those
/// sent before `until`. `None` when no write sent after the kill succeeded.
fn stall(writes: &[Write], killed: Instant, until: Instant) -> Option<Duration> {
    let after = || writes.iter().filter(|w| w.sent > killed && w.sent < until);
    let first_ack = after().filter_map(|w| w.acked).min()?;
    let last_failure = after().filter(|w| w.acked.is_none()).map(|w| w.sent).max();
    Some(first_ack.max(last_failure.unwrap_or(first_ack)) - killed)
}

/// Sends `write(i)` `per_second` times a second, without waiting for answers, until `stop`.
fn open_loop<F, Fut>(
    per_second: u32,
    stop: CancellationToken,
    write: F,
) -> (Writes, tokio::task::JoinHandle<()>)
where
    F: Fn(u64) -> Fut + Send + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    let writes = Writes::default();
    let log = Arc::clone(&writes);
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1) / per_second);
        let mut inflight = tokio::task::JoinSet::new();
        for i in 0u64.. {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            let (log, sending) = (Arc::clone(&log), write(i));
            let Some(at) = log.lock().ok().map(|mut log| {
                log.push(Write {
                    sent: Instant::now(),
                    acked: None,
                });
                log.len() - 1
            }) else {
                break;
            };
            inflight.spawn(async move {
                let ok = matches!(
                    tokio::time::timeout(Duration::from_secs(5), sending).await,
                    Ok(true)
                );
                if let (true, Ok(mut log)) = (ok, log.lock())
                    && let Some(write) = log.get_mut(at)
                {
                    write.acked = Some(Instant::now());
                }
            });
        }
        while inflight.join_next().await.is_some() {}
    });
    (writes, task)
}

fn stalls_of(writes: &Writes, killed: Instant, until: Instant) -> Option<Duration> {
    writes.lock().ok().and_then(|w| stall(&w, killed, until))
}

pub(super) async fn member_loss(report: &mut Report, quick: bool) -> Result<(), ToolError> {
    let (trials, down) = if quick {
        (2, Duration::from_millis(1_500))
    } else {
        (6, Duration::from_secs(5))
    };
    let scratch = Scratch::new("member-loss")?;
    let mut cluster = EtcdCluster::start(&scratch.0, 3).await?;
    let endpoints = cluster.urls();
    // Sessions at the default TTL (5 s): a raft election plus a failed keep-alive round fit in
    // it, so that losing a member is not also a failover of the masters.
    let config = procs::master_config(&scratch.0, 5)?;
    let masters = [
        procs::master(1, &endpoints.join(","), &config)?,
        procs::master(2, &endpoints.join(","), &config)?,
    ];
    let client = http_client(64)?;
    for master in &masters {
        wait_until("a master", Duration::from_secs(30), || {
            is_ready(&client, &master.url)
        })
        .await?;
    }
    let stop = CancellationToken::new();
    let urls: Vec<String> = masters.iter().map(|m| m.url.clone()).collect();
    let run = format!("{}", std::process::id());
    let (ours, ours_task) = open_loop(100, stop.clone(), {
        let client = client.clone();
        move |i| {
            let (client, url) = (client.clone(), urls[i as usize % urls.len()].clone());
            let name = format!("ml-{run}-{i}");
            async move { create(&client, &url, &name).await }
        }
    });
    let mut raw_clients = Vec::new();
    for url in &endpoints {
        raw_clients.push(Client::connect([url.as_str()], None).await?);
    }
    let down_member = Arc::new(AtomicUsize::new(usize::MAX));
    let (raw, raw_task) = open_loop(100, stop.clone(), {
        let down_member = Arc::clone(&down_member);
        move |i| {
            let members = raw_clients.len();
            let mut pick = i as usize % members;
            if pick == down_member.load(Ordering::Relaxed) {
                pick = (pick + 1) % members;
            }
            let mut client = raw_clients[pick].clone();
            async move {
                client
                    .put(format!("/bench/raw/{i}"), "x", None)
                    .await
                    .is_ok()
            }
        }
    });
    // (raft leader killed, ours, raw)
    let mut measured: Vec<(bool, Duration, Duration)> = Vec::new();
    for trial in 0..trials {
        let flowing = Instant::now();
        wait_until("writes to flow", Duration::from_secs(30), || async {
            stalls_of(&ours, flowing, Instant::now()).is_some()
                && stalls_of(&raw, flowing, Instant::now()).is_some()
        })
        .await?;
        let leader = cluster.raft_leader().await.unwrap_or(0);
        let kill_leader = trial % 2 == 0;
        let victim = if kill_leader {
            leader
        } else {
            (leader + 1 + trial / 2 % 2) % 3
        };
        down_member.store(victim, Ordering::Relaxed);
        cluster.kill(victim);
        let killed = Instant::now();
        tokio::time::sleep(down).await;
        // Writes sent in the last 0.5 s may still be waiting for an answer.
        let until = Instant::now() - Duration::from_millis(500);
        // A writer none of whose writes sent since the kill succeeded stalled the whole time
        // the member was down, at least.
        let o = stalls_of(&ours, killed, until).unwrap_or(down);
        let r = stalls_of(&raw, killed, until).unwrap_or(down);
        measured.push((kill_leader, o, r));
        cluster.restart(victim).await?;
        down_member.store(usize::MAX, Ordering::Relaxed);
        // The member catches up and the masters take it back before the next kill.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    stop.cancel();
    let _ = ours_task.await;
    let _ = raw_task.await;
    let failed = |w: &Writes| {
        w.lock()
            .map_or(0, |w| w.iter().filter(|w| w.acked.is_none()).count())
    };
    report.note(
        "17 etcd member loss",
        format!(
            "{} trials, each member down {}; writes that failed: ours {}, raw {}",
            trials,
            ms(down),
            failed(&ours),
            failed(&raw)
        ),
    );
    for kill_leader in [true, false] {
        let (mut o, mut r): (Vec<Duration>, Vec<Duration>) = measured
            .iter()
            .filter(|m| m.0 == kill_leader)
            .map(|m| (m.1, m.2))
            .unzip();
        o.sort();
        r.sort();
        let (Some(o_max), Some(r_max)) = (o.last(), r.last()) else {
            continue;
        };
        let (o_med, r_med) = (o[o.len() / 2], r[r.len() / 2]);
        let who = if kill_leader {
            "raft leader"
        } else {
            "a follower"
        };
        report.note(
            "17 etcd member loss",
            format!(
                "{who} killed, each trial's stall, ours / raw: {}",
                measured
                    .iter()
                    .filter(|m| m.0 == kill_leader)
                    .map(|m| format!("{} / {}", ms(m.1), ms(m.2)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
        let extra = o_max.saturating_sub(*r_max);
        report.add(
            "17 etcd member loss",
            format!("{who} killed: write stall, median / max"),
            format!("{} / {}", ms(o_med), ms(*o_max)),
            format!("{} / {}", ms(r_med), ms(*r_max)),
            format!("+{}", ms(extra)),
            "max <= raw's + 1 s",
            Some(extra <= Duration::from_secs(1)),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    #[test]
    fn a_stall_ends_at_the_first_ack_or_after_the_last_failure() {
        let t = Instant::now();
        let w = |sent, acked: Option<u64>| Write {
            sent: at(t, sent),
            acked: acked.map(|a| at(t, a)),
        };
        let killed = at(t, 100);
        let until = at(t, 10_000);
        // Before the kill: ignored. After: a failure sent at 400, an ack at 700.
        let writes = [
            w(50, None),
            w(110, Some(900)),
            w(200, Some(700)),
            w(400, None),
        ];
        assert_eq!(
            stall(&writes, killed, until),
            Some(Duration::from_millis(600))
        );
        // A failure (or a write still waiting) sent after the first ack moves the end to its
        // sending.
        let writes = [w(110, Some(300)), w(500, None), w(600, Some(610))];
        assert_eq!(
            stall(&writes, killed, until),
            Some(Duration::from_millis(400))
        );
        // A failure sent at or after `until` is not judged.
        let writes = [w(110, Some(300)), w(10_000, None)];
        assert_eq!(
            stall(&writes, killed, until),
            Some(Duration::from_millis(200))
        );
        // Nothing succeeded since the kill.
        assert_eq!(stall(&[w(50, Some(60)), w(200, None)], killed, until), None);
    }
}
