//! A cooperating program in Rust (the libcairn crate's API): the C
//! example `counter.c` in short. STEPS steps, a restart checkpoint every
//! EVERY steps, the step and running sum as nonrestart data after each;
//! a process restored at a restart checkpoint checks its sum and prints
//! the newest nonrestart data.
//!
//! ```text
//! cargo build --release -p libcairn --example libcairn_counter
//! cairn run -D DIR -- target/release/examples/libcairn_counter STEPS EVERY
//! target/release/examples/libcairn_counter --standalone   # ENOTCONN
//! ```

use cairn_lib::{Error, Resumed};

fn sum_to(n: u64) -> u64 {
    (1..=n).map(|i| i * i).sum()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--standalone") {
        let r = cairn_lib::checkpoint_data(b"x");
        assert_eq!(r, Err(Error::NOT_CONNECTED), "outside a supervisor");
        println!("standalone: {}", r.unwrap_err());
        println!("PASS");
        return;
    }
    let steps: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10);
    let every: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3);
    let mut sum = 0u64;
    for step in 1..=steps {
        sum += step * step;
        if step % every == 0 {
            match cairn_lib::checkpoint() {
                Ok(Resumed::Continued) => {}
                Ok(Resumed::Restored) => {
                    assert_eq!(sum, sum_to(step), "memory is the restart point's");
                    let d = cairn_lib::takeover_vec().expect("takeover data");
                    println!(
                        "restored at step {step}; newest data: {}",
                        String::from_utf8_lossy(&d)
                    );
                }
                Err(e) => panic!("cairn_checkpoint: {e}"),
            }
        }
        let data = format!("step {step} sum {sum}");
        cairn_lib::checkpoint_data(data.as_bytes()).expect("checkpoint_data");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    println!("PASS {steps} steps, sum {sum}");
}
