//! `porter-fuzz`: throws mutated inputs at everything porter reads from
//! outside — configs, Lambda events, UserParameters, continuation tokens —
//! and fails on a panic, an abort, a broken property (a secret repeated in
//! a message, a token opening that should not), a hang or a memory cap.
//!
//! Stable Rust has no coverage-guided engine, so this is a mutational
//! fuzzer: seeds from `events/`, `examples/` and hand-made ones, byte and
//! JSON-structure mutations, and inputs that get past the first parser
//! kept to mutate further. Deterministic for a seed: a failure replays.
//!
//! The supervisor runs each target in a child process (this binary with
//! `--target`), so an abort or a hang is caught too. Before each input the
//! child writes it to `OUT/TARGET.current`; when the child dies, that
//! file is the input that killed it and is kept as `OUT/crash-TARGET-SEED`.
//!
//! ```text
//! porter-fuzz [--inputs N] [--seed S] [--memory-mib M] [--out DIR] [--only TARGET]
//! ```

mod mutate;
mod targets;

use std::alloc::{GlobalAlloc, Layout, System};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use mutate::Rng;

/// Counts live heap bytes, keeps the peak, and refuses to go past a cap:
/// an allocation over it fails, which aborts the child, and the supervisor
/// reports the input. RSS would also count the allocator's own slack; this
/// is what the code under test asked for.
struct Capped;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static CAP: AtomicUsize = AtomicUsize::new(usize::MAX);

impl Capped {
    fn take(size: usize) -> bool {
        let now = CURRENT.fetch_add(size, Relaxed) + size;
        if now > CAP.load(Relaxed) {
            CURRENT.fetch_sub(size, Relaxed);
            return false;
        }
        PEAK.fetch_max(now, Relaxed);
        true
    }
}

// SAFETY: every call is passed on to the system allocator unchanged; the
// counters only decide whether to pass it on at all.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !Capped::take(layout.size()) {
            return std::ptr::null_mut();
        }
        let p = System.alloc(layout);
        if p.is_null() {
            CURRENT.fetch_sub(layout.size(), Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        CURRENT.fetch_sub(layout.size(), Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = layout.size();
        if new_size > old && !Capped::take(new_size - old) {
            return std::ptr::null_mut();
        }
        let p = System.realloc(ptr, layout, new_size);
        if p.is_null() {
            if new_size > old {
                CURRENT.fetch_sub(new_size - old, Relaxed);
            }
        } else if new_size < old {
            CURRENT.fetch_sub(old - new_size, Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Capped = Capped;

struct Options {
    inputs: u64,
    seed: u64,
    memory_mib: usize,
    out: PathBuf,
    only: Option<String>,
    target: Option<String>,
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        inputs: 20_000,
        seed: 1,
        memory_mib: 512,
        out: PathBuf::from("target/fuzz"),
        only: None,
        target: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--inputs" => o.inputs = value("--inputs")?.parse().map_err(|e| format!("--inputs: {e}"))?,
            "--seed" => o.seed = value("--seed")?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--memory-mib" => {
                o.memory_mib = value("--memory-mib")?
                    .parse()
                    .map_err(|e| format!("--memory-mib: {e}"))?
            }
            "--out" => o.out = PathBuf::from(value("--out")?),
            "--only" => o.only = Some(value("--only")?),
            "--target" => o.target = Some(value("--target")?),
            other => {
                return Err(format!(
                    "unknown argument {other}; usage: porter-fuzz [--inputs N] [--seed S] [--memory-mib M] [--out DIR] [--only TARGET]"
                ))
            }
        }
    }
    Ok(o)
}

fn main() -> ExitCode {
    let o = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("porter-fuzz: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = std::fs::create_dir_all(&o.out) {
        eprintln!("porter-fuzz: cannot make {}: {e}", o.out.display());
        return ExitCode::from(2);
    }
    match &o.target {
        Some(t) => child(&o, t),
        None => supervise(&o),
    }
}

/// Runs every target in a child of its own and reports each.
fn supervise(o: &Options) -> ExitCode {
    let names: Vec<&str> = targets::all(&targets::Fixture::new()).iter().map(|t| t.name).collect();
    if let Some(only) = &o.only {
        if !names.contains(&only.as_str()) {
            eprintln!("porter-fuzz: no target {only}; there are {}", names.join(", "));
            return ExitCode::from(2);
        }
    }
    println!(
        "porter-fuzz: {} inputs per target, seed {}, memory cap {} MiB",
        o.inputs, o.seed, o.memory_mib
    );
    let me = std::env::current_exe().expect("this binary's path");
    let mut failed = 0;
    for name in names
        .into_iter()
        .filter(|n| o.only.as_deref().is_none_or(|only| only == *n))
    {
        let started = Instant::now();
        let mut child = match Command::new(&me)
            .args([
                "--target",
                name,
                "--inputs",
                &o.inputs.to_string(),
                "--seed",
                &o.seed.to_string(),
            ])
            .args(["--memory-mib", &o.memory_mib.to_string(), "--out"])
            .arg(&o.out)
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                eprintln!("porter-fuzz: cannot start the {name} target: {e}");
                return ExitCode::from(2);
            }
        };
        // A generous bound: no input should take more than a fraction of
        // a second, so a run this long means one hangs.
        let limit = Duration::from_secs(120 + o.inputs / 500);
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if started.elapsed() > limit => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => {
                    eprintln!("porter-fuzz: waiting for the {name} target: {e}");
                    break None;
                }
            }
        };
        if status.is_some_and(|s| s.success()) {
            continue;
        }
        failed += 1;
        let why = match status {
            None => format!("did not finish in {}s (an input hangs)", limit.as_secs()),
            Some(s) => format!("ended with {s} (a panic, a broken property, or an abort such as the memory cap)"),
        };
        let current = o.out.join(format!("{name}.current"));
        let kept = o.out.join(format!("crash-{name}-{}", o.seed));
        match read_current(&current).and_then(|input| std::fs::write(&kept, input)) {
            Ok(()) => eprintln!(
                "porter-fuzz: {name} {why}; the input is in {} (replay: porter-fuzz --only {name} --seed {})",
                kept.display(),
                o.seed
            ),
            Err(e) => eprintln!("porter-fuzz: {name} {why}; its last input could not be read: {e}"),
        }
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn read_current(path: &Path) -> std::io::Result<Vec<u8>> {
    let bytes = std::fs::read(path)?;
    let len = u32::from_le_bytes(bytes.get(..4).and_then(|b| b.try_into().ok()).unwrap_or_default()) as usize;
    Ok(bytes.get(4..4 + len).unwrap_or_default().to_vec())
}

/// One target, `o.inputs` inputs, in this process.
fn child(o: &Options, name: &str) -> ExitCode {
    let fx = targets::Fixture::new();
    let Some(target) = targets::all(&fx).into_iter().find(|t| t.name == name) else {
        eprintln!("porter-fuzz: no target {name}");
        return ExitCode::from(2);
    };
    let current = match File::create(o.out.join(format!("{name}.current"))) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("porter-fuzz: {e}");
            return ExitCode::from(2);
        }
    };
    // The cap counts from here: what the fixture and the seeds hold is
    // the baseline, not the target's.
    let baseline = CURRENT.load(Relaxed);
    PEAK.store(baseline, Relaxed);
    CAP.store(baseline + o.memory_mib * 1024 * 1024, Relaxed);

    let mut rng = Rng::new(o.seed ^ fnv(name.as_bytes()));
    let mut pool: Vec<Vec<u8>> = target.seeds.clone();
    let seeds = pool.len();
    let mut kept = 0u64;
    let mut deep = 0u64;
    let (mut slowest, mut slowest_len) = (Duration::ZERO, 0usize);
    let started = Instant::now();
    let inputs = (o.inputs / target.input_weight.max(1)).max(target.seeds.len() as u64);
    for i in 0..inputs {
        let input = if i < seeds as u64 {
            pool[i as usize].clone()
        } else {
            let base = &pool[rng.below(pool.len())];
            let other = &pool[rng.below(pool.len())];
            let structural = target.json && rng.chance(2);
            match serde_json::from_slice(base) {
                Ok(v) if structural => {
                    let mut out = serde_json::to_vec(&mutate::mutate_json(&mut rng, v)).expect("JSON serializes");
                    out.truncate(target.max_len);
                    out
                }
                _ => mutate::mutate_bytes(&mut rng, base, other, target.max_len),
            }
        };
        let mut record = (input.len() as u32).to_le_bytes().to_vec();
        record.extend_from_slice(&input);
        if let Err(e) = current.write_all_at(&record, 0) {
            eprintln!("porter-fuzz: cannot record the input: {e}");
            return ExitCode::from(2);
        }
        if let Some(mib) = target.memory_mib_per_input {
            // This input's own budget, counted from what is live now.
            CAP.store(CURRENT.load(Relaxed) + mib * 1024 * 1024, Relaxed);
        }
        let t = Instant::now();
        // Unwind-safe in practice: after a panic the child stops, so no
        // state the panic left half-changed is used again.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (target.run)(&fx, &input)));
        let took = t.elapsed();
        if took > slowest {
            (slowest, slowest_len) = (took, input.len());
        }
        match result {
            Err(_) => {
                eprintln!("porter-fuzz: {name}: input {i} panicked (above)");
                return ExitCode::FAILURE;
            }
            Ok(Err(broken)) => {
                eprintln!("porter-fuzz: {name}: input {i}: {broken}");
                return ExitCode::FAILURE;
            }
            Ok(Ok(true)) => {
                deep += 1;
                // Keep a bounded, changing pool of inputs that got in.
                if i >= seeds as u64 && rng.chance(8) {
                    kept += 1;
                    if pool.len() < 512 {
                        pool.push(input);
                    } else {
                        let at = seeds + rng.below(pool.len() - seeds);
                        pool[at] = input;
                    }
                }
            }
            Ok(Ok(false)) => {}
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{name:>16}: {} inputs in {secs:.1}s ({:.0}/s), {deep} past the first parser, {kept} kept, slowest {:.1} ms ({} bytes), peak heap {:.1} MiB over the baseline",
        inputs,
        inputs as f64 / secs.max(1e-9),
        slowest.as_secs_f64() * 1000.0,
        slowest_len,
        (PEAK.load(Relaxed) - baseline) as f64 / (1024.0 * 1024.0)
    );
    ExitCode::SUCCESS
}

/// A stable hash, so each target gets its own stream for one seed.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x100_0000_01b3)
    })
}
