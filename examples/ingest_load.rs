//! A lean load generator for `POST /ingest` (millwatch, NDJSON) and `POST /write` (InfluxDB 1.x,
//! line protocol): the same readings as `bench/ingest.lua`, without wrk's Lua.
//!
//! Why it exists: the benchmarks run the server and the load tool on the same two cores. wrk's
//! script builds every 1000-line body from a thousand Lua strings, which costs about as much CPU
//! per reading as a third of what millwatch spends storing it; that CPU is taken from the server
//! under test. This tool renders each connection's body once and, per request, only rewrites the
//! digits of the ten timestamps in place, so nearly all of the machine is left to the server.
//! Both servers in `bench/vs_influxdb.sh` are driven by the same tool in the same run.
//!
//! Each request holds 1000 readings: 100 machines (owned by one connection, so each machine's
//! readings arrive in time order) at 10 distinct seconds. No reading repeats across requests,
//! connections or runs (each run takes its own range of times from the clock), so no request is
//! a cheap duplicate for millwatch or an overwrite for InfluxDB. A request counts only when it is
//! answered with a 2xx, and for millwatch only when the answer says `{"accepted":1000}`.
//!
//! ```text
//! cargo run --release --example ingest_load -- --url http://127.0.0.1:8080 --format json
//! cargo run --release --example ingest_load -- --url http://127.0.0.1:8086 --format lp
//! ```

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, ValueEnum};

/// Machines per connection; each request carries one reading per machine per second.
const MACHINES: usize = 100;
/// Distinct seconds per request.
const SECONDS_PER_REQUEST: usize = 10;
/// Readings per request.
const BATCH: usize = MACHINES * SECONDS_PER_REQUEST;
/// Timestamps are written as exactly this many digits (seconds since the epoch, 2001–2286).
const TIME_DIGITS: usize = 10;

#[derive(Parser, Debug)]
#[command(about = "POST 1000-reading batches as fast as the server answers them")]
struct Args {
    /// Base URL of the server, `http://HOST:PORT`.
    #[arg(long)]
    url: String,
    /// `json`: NDJSON to `/ingest` (millwatch); `lp`: line protocol to
    /// `/write?db=bench&precision=s` (InfluxDB 1.x).
    #[arg(long, value_enum, default_value = "json")]
    format: Format,
    /// How long to send, e.g. `10s`.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Concurrent connections, each on a thread of its own with one request in flight.
    #[arg(long, default_value_t = 2)]
    connections: usize,
    /// Readings per second over all connections (paced); default: as fast as answered.
    #[arg(long)]
    rate: Option<f64>,
    /// The first reading's time, in seconds since the epoch (default: a range of its own taken
    /// from the clock). Runs one after another (the soak) give each its own range.
    #[arg(long)]
    time_base: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    Json,
    Lp,
}

/// What one connection did.
#[derive(Default)]
struct Tally {
    ok: u64,
    failed: u64,
    first_failure: Option<String>,
    /// Latency of each answered request, in microseconds.
    latencies: Vec<u32>,
}

/// One connection's request, rendered once; only the timestamp digits change between requests.
struct Request {
    bytes: Vec<u8>,
    /// For each of the `SECONDS_PER_REQUEST` seconds, where its timestamps' digits start.
    slots: Vec<Vec<usize>>,
}

/// A small deterministic generator for the readings' values (xorshift64*): values need only look
/// like a plant's, and every run should send the same ones.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A uniform value in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Request {
    fn render(format: Format, host: &str, connection: usize) -> Request {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (connection as u64 + 1));
        let placeholder = "0".repeat(TIME_DIGITS);
        let mut body = String::with_capacity(BATCH * 128);
        let mut slots: Vec<Vec<usize>> = (0..SECONDS_PER_REQUEST)
            .map(|_| Vec::with_capacity(MACHINES))
            .collect();
        let mut line_of_machine = Vec::with_capacity(MACHINES);
        for machine in 0..MACHINES {
            let name = format!("press-{connection}-{machine:03}");
            let temperature = 60.0 + 20.0 * rng.unit();
            let speed = 1400 + rng.next() % 201;
            let pressure = 4.0 + rng.unit();
            line_of_machine.push(match format {
                Format::Json => (
                    format!(r#"{{"machine_id":"{name}","timestamp":"#),
                    format!(
                        r#","temperature":{temperature:.3},"speed":{speed},"pressure":{pressure:.4},"status":"RUNNING"}}"#
                    ),
                ),
                Format::Lp => (
                    format!(
                        r#"machine,machine_id={name} temperature={temperature:.3},speed={speed}i,pressure={pressure:.4},status="RUNNING" "#
                    ),
                    String::new(),
                ),
            });
        }
        for (second, slot) in slots.iter_mut().enumerate() {
            for (head, tail) in &line_of_machine {
                if !body.is_empty() {
                    body.push('\n');
                }
                body.push_str(head);
                slot.push(body.len());
                body.push_str(&placeholder);
                body.push_str(tail);
            }
            debug_assert_eq!(slot.len(), MACHINES, "second {second}");
        }
        let (path, content_type) = match format {
            Format::Json => ("/ingest", "application/x-ndjson"),
            Format::Lp => ("/write?db=bench&precision=s", "text/plain"),
        };
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let offset = head.len();
        for slot in &mut slots {
            for at in slot.iter_mut() {
                *at += offset;
            }
        }
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body.as_bytes());
        Request { bytes, slots }
    }

    /// Sets the request's seconds to `first`, `first + 1`, …
    fn set_times(&mut self, first: u64) {
        for (second, slot) in self.slots.iter().enumerate() {
            let digits = format!("{:0width$}", first + second as u64, width = TIME_DIGITS);
            debug_assert_eq!(digits.len(), TIME_DIGITS);
            for &at in slot {
                self.bytes[at..at + TIME_DIGITS].copy_from_slice(digits.as_bytes());
            }
        }
    }
}

/// Reads one HTTP/1.1 response; returns its status and body.
fn read_response(reader: &mut BufReader<TcpStream>) -> io::Result<(u16, Vec<u8>)> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad status line {line:?}"),
            )
        })?;
    let mut length = 0usize;
    let mut chunked = false;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse().map_err(|_| {
                    io::Error::new(io::ErrorKind::InvalidData, "bad Content-Length")
                })?;
            } else if name.eq_ignore_ascii_case("transfer-encoding")
                && value.eq_ignore_ascii_case("chunked")
            {
                chunked = true;
            }
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim_end(), 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            let start = body.len();
            body.resize(start + size + 2, 0);
            reader.read_exact(&mut body[start..])?;
            body.truncate(start + size);
            if size == 0 {
                break;
            }
        }
    } else if status != 204 && status != 304 && !(100..200).contains(&status) {
        body.resize(length, 0);
        reader.read_exact(&mut body)?;
    }
    Ok((status, body))
}

fn drive(args: &Args, connection: usize, first_time: u64, deadline: Instant) -> io::Result<Tally> {
    let authority = args.url.trim_start_matches("http://").trim_end_matches('/');
    let stream = TcpStream::connect(authority)?;
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let mut request = Request::render(args.format, authority, connection);
    let expected = format!(r#""accepted":{BATCH}"#);
    let mut tally = Tally::default();
    let mut time = first_time;
    // Paced: this connection's share of the rate, one request per `gap`.
    let gap = args
        .rate
        .map(|rate| Duration::from_secs_f64(BATCH as f64 * args.connections as f64 / rate));
    let mut next = Instant::now();
    while Instant::now() < deadline {
        if let Some(gap) = gap {
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            }
            next += gap;
        }
        request.set_times(time);
        time += SECONDS_PER_REQUEST as u64;
        let sent = Instant::now();
        writer.write_all(&request.bytes)?;
        let (status, body) = read_response(&mut reader)?;
        tally
            .latencies
            .push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX));
        let accepted = match args.format {
            Format::Json => {
                status == 200
                    && body
                        .windows(expected.len())
                        .any(|w| w == expected.as_bytes())
            }
            Format::Lp => (200..300).contains(&status),
        };
        if accepted {
            tally.ok += 1;
        } else {
            tally.failed += 1;
            tally
                .first_failure
                .get_or_insert_with(|| format!("{status} {}", String::from_utf8_lossy(&body)));
        }
    }
    Ok(tally)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    f64::from(sorted[rank.clamp(1, sorted.len()) - 1]) / 1000.0
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !args.url.starts_with("http://") {
        eprintln!("ingest_load: --url must be http://HOST:PORT");
        return ExitCode::from(2);
    }
    // Each run takes its own 10^6 seconds (from the clock), each connection its share of them.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let run_base = args
        .time_base
        .unwrap_or(1_000_000_000 + (now % 1000) * 1_000_000);
    let share = 1_000_000 / args.connections.max(1) as u64;
    let start = Instant::now();
    let deadline = start + args.duration;
    let results: Vec<io::Result<Tally>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..args.connections)
            .map(|c| {
                let args = &args;
                scope.spawn(move || drive(args, c, run_base + c as u64 * share, deadline))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(io::Error::other("connection thread panicked")))
            })
            .collect()
    });
    let elapsed = start.elapsed().as_secs_f64();
    let mut total = Tally::default();
    for result in results {
        match result {
            Ok(tally) => {
                total.ok += tally.ok;
                total.failed += tally.failed;
                total.latencies.extend(tally.latencies);
                if total.first_failure.is_none() {
                    total.first_failure = tally.first_failure;
                }
            }
            Err(e) => {
                eprintln!("ingest_load: connection failed: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    total.latencies.sort_unstable();
    println!(
        "result: {} requests ({} failed) in {elapsed:.1} s -> {:.0} readings/s; p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        total.ok + total.failed,
        total.failed,
        total.ok as f64 * BATCH as f64 / elapsed,
        percentile(&total.latencies, 50.0),
        percentile(&total.latencies, 99.0),
        percentile(&total.latencies, 100.0),
    );
    if let Some(failure) = total.first_failure {
        eprintln!("ingest_load: first failure: {failure}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
