use super::*;
use std::collections::HashMap;
use std::sync::Arc;

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn insert(shard: &Shard, obj: usize, id: u64, data: usize) {
    let mut w = shard.write();
    assert!(w.reserve());
    w.insert(&Key::new(obj, id), data);
}

/// Random inserts and removals on a few keys (long clusters, wrap-around at the end
/// of the array, deletions in the middle of clusters) against a HashMap.
#[test]
fn same_answers_as_a_hash_map() {
    let shard = Shard::new();
    let mut model: HashMap<(usize, u64), usize> = HashMap::new();
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for step in 0..200_000usize {
        let obj = 0x7f00_0000_1000 + (rng.next() % 300) as usize * 16;
        let id = rng.next() % 3;
        let key = Key::new(obj, id);
        if rng.next() & 1 == 0 {
            if let std::collections::hash_map::Entry::Vacant(e) = model.entry((obj, id)) {
                insert(&shard, obj, id, step + 1);
                e.insert(step + 1);
            }
        } else {
            let removed = shard.write().remove(&key);
            assert_eq!(removed, model.remove(&(obj, id)), "remove {obj:#x}/{id} at step {step}");
        }
        if step % 1000 == 0 {
            for (&(o, i), &d) in &model {
                assert_eq!(shard.get(&Key::new(o, i)), d, "get {o:#x}/{i} at step {step}");
            }
        }
        assert_eq!(shard.get(&key), model.get(&(obj, id)).copied().unwrap_or(0));
    }
    // SAFETY: test-only look at the writer state; no other thread uses this shard.
    assert_eq!(unsafe { (*shard.writer.get()).len }, model.len());
}

/// Pointers as malloc hands them out (consecutive, 16 apart) spread over the shards
/// and make short probes.
#[test]
fn consecutive_pointers_spread() {
    let mut per_shard = [0usize; 1 << SHARD_BITS];
    let shard = Shard::new();
    for k in 0..100_000usize {
        let key = Key::new(0x5555_0000_0000 + k * 16, 7);
        per_shard[key.shard()] += 1;
        if key.shard() == 0 {
            insert(&shard, key.obj, 7, k + 1);
        }
    }
    let (min, max) = (per_shard.iter().min().unwrap(), per_shard.iter().max().unwrap());
    assert!(*min > 1200 && *max < 1950, "uneven shards: {min}..{max}");
    // Longest probe in the one shard we filled.
    let table = shard.read.table.load(Ordering::Relaxed);
    // SAFETY: the table is live; this thread is the only user.
    let (mask, shift) = unsafe { Table::header(table) };
    let mut longest = 0;
    for i in 0..=mask {
        // SAFETY: i <= mask.
        let slot = unsafe { Table::slot(table, i) };
        if slot.data.load(Ordering::Relaxed) != 0 {
            let home = Key::new(slot.obj.load(Ordering::Relaxed), 7).home(shift, mask);
            longest = longest.max((i + mask + 1 - home) & mask);
        }
    }
    assert!(longest < 40, "a probe of {longest} slots");
}

/// Readers never see a key with another key's data, nor miss a key that stays in the
/// table, while a writer inserts, removes and grows around them.
#[test]
fn readers_see_consistent_entries() {
    let shard = Arc::new(Shard::new());
    const STABLE: usize = 500;
    // data of (obj, id) is always obj ^ id ^ 1 (never 0 for these keys).
    let data_of = |obj: usize, id: u64| obj ^ id as usize ^ 1;
    for k in 0..STABLE {
        let obj = 0x1000 + k * 32;
        insert(&shard, obj, 1, data_of(obj, 1));
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|r| {
            let (shard, stop) = (shard.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut rng = Rng(r + 99);
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) || n < 100_000 {
                    let k = (rng.next() % STABLE as u64) as usize;
                    let obj = 0x1000 + k * 32;
                    assert_eq!(shard.get(&Key::new(obj, 1)), data_of(obj, 1), "stable key lost");
                    let churn = 0x1000 + (rng.next() % 4000) as usize * 32;
                    let d = shard.get(&Key::new(churn, 2));
                    assert!(d == 0 || d == data_of(churn, 2), "wrong data for a churning key");
                    n += 1;
                }
            })
        })
        .collect();
    let mut rng = Rng(7);
    for _ in 0..300_000 {
        let obj = 0x1000 + (rng.next() % 4000) as usize * 32;
        let key = Key::new(obj, 2);
        let mut w = shard.write();
        if w.find(&key).is_some() {
            w.remove(&key);
        } else {
            assert!(w.reserve());
            w.insert(&key, data_of(obj, 2));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
}

#[test]
fn take_batch_takes_one_id_only() {
    let shard = Shard::new();
    for k in 0..1000usize {
        insert(&shard, 0x9000 + k * 16, (k % 3) as u64, k + 1);
    }
    let mut out = [(0, 0); 100];
    let mut taken = Vec::new();
    loop {
        let n = shard.write().take_batch(1, &mut out);
        taken.extend_from_slice(&out[..n]);
        if n < out.len() {
            break;
        }
    }
    assert_eq!(taken.len(), 333);
    for (obj, data) in taken {
        assert_eq!((obj - 0x9000) / 16 % 3, 1);
        assert_eq!(data, (obj - 0x9000) / 16 + 1);
    }
    for k in 0..1000usize {
        let got = shard.get(&Key::new(0x9000 + k * 16, (k % 3) as u64));
        assert_eq!(got, if k % 3 == 1 { 0 } else { k + 1 });
    }
}

#[test]
fn grows_by_doubling_and_keeps_entries() {
    let shard = Shard::new();
    assert_eq!(shard.capacity(), 0);
    for k in 0..10_000usize {
        insert(&shard, k * 8, 0, k + 1);
    }
    assert_eq!(shard.capacity(), 32_768);
    // SAFETY: test-only look at the writer state; no other thread uses this shard.
    let retired = unsafe { (*shard.writer.get()).retired.len() };
    assert_eq!(retired, 11, "16, 32, ..., 16384 retired");
    for k in 0..10_000usize {
        assert_eq!(shard.get(&Key::new(k * 8, 0)), k + 1);
    }
}
