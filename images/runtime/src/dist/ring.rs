//! The TCP ring: rendezvous through rank 0, one connection to the next rank
//! and one from the previous, and the ring all-reduce over them.
//!
//! Every ring message opens with a [`Header`]: the operation, its number on
//! this ring, the element type and the element count. The receiver checks
//! it against what it is doing itself before reading the payload, so ranks
//! that fall out of step (different lengths, one broadcasting while the
//! other sums) fail at once with a message naming both sides, instead of
//! summing the wrong bytes or waiting forever; and nothing a peer announces
//! is allocated beyond what the receiver expects or [`MAX_TENSOR_BYTES`].

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::DistConfig;
use crate::error::{Error, Result};

const MAGIC: &[u8; 4] = b"KILN";

/// Numbers the ring can sum.
pub trait Elem: Copy + std::ops::AddAssign + Send + Sync {
    const BYTES: usize;
    /// The [`Header`] code of the type.
    const DTYPE: u8;
    fn put(self, out: &mut Vec<u8>);
    fn get(bytes: &[u8]) -> Self;
}

impl Elem for f32 {
    const BYTES: usize = 4;
    const DTYPE: u8 = DTYPE_F32;
    fn put(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn get(b: &[u8]) -> Self {
        f32::from_le_bytes(b.try_into().expect("4 bytes"))
    }
}

impl Elem for f64 {
    const BYTES: usize = 8;
    const DTYPE: u8 = DTYPE_F64;
    fn put(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn get(b: &[u8]) -> Self {
        f64::from_le_bytes(b.try_into().expect("8 bytes"))
    }
}

const DTYPE_F32: u8 = 1;
const DTYPE_F64: u8 = 2;

/// What a ring message is part of: the collective operations every rank
/// runs in the same order, or a tensor sent down or up the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    AllReduce = 1,
    Broadcast = 2,
    Gather = 3,
    PipelineSend = 4,
}

/// The largest tensor a peer may announce in a pipeline send (2 GiB of
/// float32); a larger announcement is refused before anything is
/// allocated. Collectives need no such bound: the receiver knows its own
/// length and refuses any other.
pub const MAX_TENSOR_BYTES: u64 = 1 << 31;
/// The most dimensions a pipeline tensor may have.
const MAX_DIMS: u32 = 16;
/// Bytes of a [`Header`] on the wire.
pub(crate) const HEADER_BYTES: usize = 24;
const HEADER_MAGIC: u8 = b'K';

/// The 24 bytes each ring message opens with: a magic byte, the operation,
/// the element type, a zero byte, the part (the message's index within a
/// collective, 0 for a pipeline send), the operation's number (collectives
/// count together from 1 on each ring; pipeline sends count per direction)
/// and its element count (of the whole buffer for a collective), little
/// endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub magic: u8,
    pub op: u8,
    pub dtype: u8,
    pub part: u32,
    pub seq: u64,
    pub count: u64,
}

impl Header {
    pub(crate) fn new(op: Op, dtype: u8, part: u32, seq: u64, count: u64) -> Self {
        Header {
            magic: HEADER_MAGIC,
            op: op as u8,
            dtype,
            part,
            seq,
            count,
        }
    }

    pub(crate) fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut b = [0u8; HEADER_BYTES];
        b[0] = self.magic;
        b[1] = self.op;
        b[2] = self.dtype;
        b[4..8].copy_from_slice(&self.part.to_le_bytes());
        b[8..16].copy_from_slice(&self.seq.to_le_bytes());
        b[16..24].copy_from_slice(&self.count.to_le_bytes());
        b
    }

    fn decode(b: &[u8; HEADER_BYTES]) -> Self {
        Header {
            magic: b[0],
            op: b[1],
            dtype: b[2],
            part: u32_at(b, 4),
            seq: u64::from_le_bytes(b[8..16].try_into().expect("8 bytes")),
            count: u64::from_le_bytes(b[16..24].try_into().expect("8 bytes")),
        }
    }

    fn op_name(&self) -> String {
        match self.op {
            1 => "all-reduce".into(),
            2 => "broadcast".into(),
            3 => "gather".into(),
            4 => "pipeline send".into(),
            other => format!("unknown operation {other}"),
        }
    }

    fn dtype_name(&self) -> String {
        match self.dtype {
            DTYPE_F32 => "f32".into(),
            DTYPE_F64 => "f64".into(),
            other => format!("values of unknown type {other}"),
        }
    }

    /// `all-reduce #57 of 12 f32`; with `part`, the message's index too.
    fn describe(&self, part: bool) -> String {
        if self.magic != HEADER_MAGIC {
            return format!(
                "bytes that are no ring message ({:02x?})",
                &self.encode()[..8]
            );
        }
        let mut s = format!(
            "{} #{} of {} {}",
            self.op_name(),
            self.seq,
            self.count,
            self.dtype_name()
        );
        if part {
            s.push_str(&format!(" (message {})", self.part + 1));
        }
        s
    }
}

/// This rank's two ring connections.
#[derive(Debug)]
pub struct Ring {
    rank: usize,
    world: usize,
    next: TcpStream,
    prev: TcpStream,
    /// How long a read or a write may wait for the peer.
    timeout: Duration,
    /// Collectives begun on this ring.
    ops: u64,
    /// Pipeline tensors sent and received, forward and back.
    sent: [u64; 2],
    received: [u64; 2],
    /// Why the ring stopped: after a failed operation the streams are
    /// somewhere inside a message, so every later one fails too.
    broken: Option<String>,
}

/// `KILN_COMM_TIMEOUT_SECONDS` (default 900): how long a read or a write on
/// the ring waits for its peer before the operation fails.
pub fn comm_timeout() -> Result<Duration> {
    match std::env::var("KILN_COMM_TIMEOUT_SECONDS") {
        Err(_) => Ok(Duration::from_secs(900)),
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(s) if s > 0 => Ok(Duration::from_secs(s)),
            _ => Err(Error::Config {
                path: "$KILN_COMM_TIMEOUT_SECONDS".into(),
                reason: format!("{v:?} is not a whole number of seconds above 0"),
            }),
        },
    }
}

/// An I/O error of the ring in words: a closed connection or a timeout
/// says what it means for the peer.
fn io_words(e: &std::io::Error, peer: usize, timeout: Duration) -> String {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::BrokenPipe => {
            format!("rank {peer} closed the connection (it failed or stopped): {e}")
        }
        ErrorKind::WouldBlock | ErrorKind::TimedOut => {
            format!("rank {peer} did not answer for {timeout:?} (KILN_COMM_TIMEOUT_SECONDS)")
        }
        _ => e.to_string(),
    }
}

/// Writes all of `out`, setting `header_out` once the header is in the
/// kernel's hands. On failure both streams are shut down, so that the
/// receive running beside it (and the peers) stop too.
fn send_all(
    stream: &TcpStream,
    out: &[u8],
    header_out: &AtomicBool,
    both: [&TcpStream; 2],
) -> std::io::Result<()> {
    let mut at = 0;
    let mut s = stream;
    while at < out.len() {
        match s.write(&out[at..]) {
            Ok(0) => {
                shutdown(both);
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            Ok(n) => {
                at += n;
                if at >= HEADER_BYTES.min(out.len()) {
                    header_out.store(true, Ordering::Release);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                shutdown(both);
                return Err(e);
            }
        }
    }
    header_out.store(true, Ordering::Release);
    Ok(())
}

fn shutdown(streams: [&TcpStream; 2]) {
    for s in streams {
        let _ = s.shutdown(Shutdown::Both);
    }
}

fn dist_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Distributed(format!("{what}: {e}"))
}

fn connect_retry(addr: &str, deadline: Instant) -> Result<TcpStream> {
    loop {
        let attempt = addr
            .to_socket_addrs()
            .map_err(|e| e.to_string())
            .and_then(|mut a| a.next().ok_or_else(|| "no address".to_string()))
            .and_then(|a| {
                TcpStream::connect_timeout(&a, Duration::from_secs(5)).map_err(|e| e.to_string())
            });
        match attempt {
            Ok(s) => {
                s.set_nodelay(true).map_err(|e| dist_err(addr, e))?;
                return Ok(s);
            }
            Err(e) if Instant::now() >= deadline => {
                return Err(dist_err(&format!("connecting to {addr}"), e));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

fn read_u32(mut s: impl Read) -> std::io::Result<u32> {
    let mut b = [0u8; 4];
    s.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// How long a new connection has to introduce itself. Anything may connect
/// to a rank's ports (a port scan, a probe, a rank of an earlier attempt);
/// one that says nothing must not hold up the rendezvous.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads the `n` bytes a peer opens with, within [`HELLO_TIMEOUT`].
fn read_hello(s: &mut TcpStream, n: usize) -> std::io::Result<Vec<u8>> {
    s.set_read_timeout(Some(HELLO_TIMEOUT))?;
    let mut b = vec![0u8; n];
    s.read_exact(&mut b)?;
    s.set_read_timeout(None)?;
    Ok(b)
}

/// A number no other ring shares: it names this attempt's ring, so that a
/// connection from another job or from an earlier attempt of this one is
/// told apart from the previous rank. The standard library seeds every
/// `RandomState` from the operating system.
fn ring_nonce() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish()
}

fn accept_before(
    listener: &TcpListener,
    deadline: Instant,
    what: &str,
) -> Result<(TcpStream, SocketAddr)> {
    listener
        .set_nonblocking(true)
        .map_err(|e| dist_err(what, e))?;
    loop {
        match listener.accept() {
            Ok((s, a)) => {
                s.set_nonblocking(false).map_err(|e| dist_err(what, e))?;
                s.set_nodelay(true).map_err(|e| dist_err(what, e))?;
                return Ok((s, a));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(Error::Distributed(format!("{what}: timed out")));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(dist_err(what, e)),
        }
    }
}

/// Rank 0's side of the rendezvous: waits for every other rank's hello
/// (MAGIC, rank, world, ring port), then sends each the ring's nonce and
/// the table of every rank's ring address.
fn serve_rendezvous(
    config: &DistConfig,
    ring_port: u16,
    nonce: u64,
    deadline: Instant,
) -> Result<Vec<String>> {
    let world = config.world;
    let master = TcpListener::bind(("0.0.0.0", config.master_port))
        .map_err(|e| dist_err(&format!("listening on port {}", config.master_port), e))?;
    let mut addrs: Vec<Option<String>> = vec![None; world];
    addrs[0] = Some(format!("{}:{ring_port}", config.master_addr));
    let mut peers: Vec<Option<TcpStream>> = (0..world).map(|_| None).collect();
    while addrs.iter().any(Option::is_none) {
        let missing = || {
            let ranks: Vec<String> = (0..world)
                .filter(|r| addrs[*r].is_none())
                .map(|r| r.to_string())
                .collect();
            format!(
                "waiting for ranks at the rendezvous on port {} (missing: {})",
                config.master_port,
                ranks.join(", ")
            )
        };
        let (mut s, peer) = accept_before(&master, deadline, &missing())?;
        let hello = match read_hello(&mut s, 16) {
            Ok(h) if &h[..4] == MAGIC => h,
            _ => {
                tracing::warn!(%peer, "rendezvous: ignoring a connection that did not introduce itself as a Kiln rank");
                continue;
            }
        };
        let (r, w, port) = (
            u32_at(&hello, 4) as usize,
            u32_at(&hello, 8) as usize,
            u32_at(&hello, 12),
        );
        if w != world || r == 0 || r >= world {
            return Err(Error::Distributed(format!(
                "rendezvous: {peer} announced rank {r} of {w}; this job has ranks 1 to {} of {world} (check WORLD_SIZE and RANK)",
                world - 1
            )));
        }
        if addrs[r].is_some() {
            tracing::warn!(%peer, rank = r, "rendezvous: a rank joined again (restarted); using its new connection");
        }
        addrs[r] = Some(SocketAddr::new(peer.ip(), port as u16).to_string());
        peers[r] = Some(s);
    }
    let addrs: Vec<String> = addrs.into_iter().flatten().collect();
    let table = addrs.join("\n");
    let mut reply = nonce.to_le_bytes().to_vec();
    reply.extend_from_slice(&(table.len() as u32).to_le_bytes());
    reply.extend_from_slice(table.as_bytes());
    for s in peers.iter_mut().flatten() {
        s.write_all(&reply).map_err(|e| dist_err("rendezvous", e))?;
    }
    Ok(addrs)
}

/// The other ranks' side: announces itself to rank 0 and waits for the
/// nonce and the table. A connection that closes before the answer (rank 0
/// restarting, or something else on its port) is tried again until the
/// deadline.
fn join_rendezvous(
    config: &DistConfig,
    ring_port: u16,
    deadline: Instant,
) -> Result<(u64, Vec<String>)> {
    let master = format!("{}:{}", config.master_addr, config.master_port);
    let mut hello = MAGIC.to_vec();
    for v in [config.rank as u32, config.world as u32, ring_port as u32] {
        hello.extend_from_slice(&v.to_le_bytes());
    }
    loop {
        let attempt = connect_retry(&master, deadline).and_then(|mut s| {
            s.write_all(&hello).map_err(|e| dist_err("rendezvous", e))?;
            s.set_read_timeout(Some(
                deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_secs(1)),
            ))
            .map_err(|e| dist_err("rendezvous", e))?;
            let mut head = [0u8; 12];
            s.read_exact(&mut head).map_err(|e| {
                dist_err(
                    &format!("waiting for the rendezvous table from {master}"),
                    e,
                )
            })?;
            let nonce = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
            // One "host:port" line per rank: a longer table is no answer of
            // rank 0's, and is not allocated.
            let len = u32_at(&head, 8) as usize;
            if len > 300 * config.world {
                return Err(dist_err(
                    "rendezvous table",
                    format!("{len} bytes announced for {} ranks: refused", config.world),
                ));
            }
            let mut table = vec![0u8; len];
            s.read_exact(&mut table)
                .map_err(|e| dist_err("rendezvous table", e))?;
            let addrs: Vec<String> = String::from_utf8_lossy(&table)
                .lines()
                .map(String::from)
                .collect();
            if addrs.len() != config.world {
                return Err(dist_err(
                    "rendezvous table",
                    format!("{} addresses for {} ranks", addrs.len(), config.world),
                ));
            }
            Ok((nonce, addrs))
        });
        match attempt {
            Ok(answer) => return Ok(answer),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "rendezvous: trying again");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

impl Ring {
    /// Rendezvous, then connects the ring. Every rank listens on an
    /// ephemeral port for its previous rank; rank 0 also serves the
    /// rendezvous on `MASTER_PORT` and tells everyone the others' addresses
    /// and the ring's nonce, which every ring connection opens with.
    pub fn connect(config: &DistConfig, timeout: Duration) -> Result<Self> {
        let deadline = Instant::now() + timeout;
        let (rank, world) = (config.rank, config.world);
        let ring_listener =
            TcpListener::bind(("0.0.0.0", 0)).map_err(|e| dist_err("ring listener", e))?;
        let ring_port = ring_listener
            .local_addr()
            .map_err(|e| dist_err("ring listener", e))?
            .port();
        let (nonce, addrs) = if rank == 0 {
            let nonce = ring_nonce();
            (nonce, serve_rendezvous(config, ring_port, nonce, deadline)?)
        } else {
            join_rendezvous(config, ring_port, deadline)?
        };
        let mut next = connect_retry(&addrs[(rank + 1) % world], deadline)?;
        let mut hello = MAGIC.to_vec();
        hello.extend_from_slice(&nonce.to_le_bytes());
        hello.extend_from_slice(&(rank as u32).to_le_bytes());
        next.write_all(&hello).map_err(|e| dist_err("ring", e))?;
        let expected = (rank + world - 1) % world;
        let prev = loop {
            let (mut s, peer) = accept_before(
                &ring_listener,
                deadline,
                &format!("waiting for the previous rank ({expected}) to connect"),
            )?;
            match read_hello(&mut s, 16) {
                Ok(h) if &h[..4] == MAGIC && h[4..12] == nonce.to_le_bytes() => {
                    let from = u32_at(&h, 12) as usize;
                    if from != expected {
                        return Err(Error::Distributed(format!(
                            "ring: rank {from} connected, expected the previous rank ({expected})"
                        )));
                    }
                    break s;
                }
                _ => {
                    tracing::warn!(%peer, "ring: ignoring a connection that is not this ring's previous rank")
                }
            }
        };
        // A peer that dies without closing its socket, or stops reading,
        // must not hang us forever.
        let timeout = comm_timeout()?;
        let mut ring = Ring::from_streams(rank, world, next, prev);
        ring.set_timeout(timeout)?;
        Ok(ring)
    }

    /// A ring over two connected streams (the rendezvous done).
    pub(crate) fn from_streams(
        rank: usize,
        world: usize,
        next: TcpStream,
        prev: TcpStream,
    ) -> Self {
        Ring {
            rank,
            world,
            next,
            prev,
            timeout: Duration::from_secs(900),
            ops: 0,
            sent: [0; 2],
            received: [0; 2],
            broken: None,
        }
    }

    /// How long each read and write waits for a peer
    /// (`KILN_COMM_TIMEOUT_SECONDS` when connected).
    pub fn set_timeout(&mut self, timeout: Duration) -> Result<()> {
        let timeout = timeout.max(Duration::from_millis(1));
        for s in [&self.next, &self.prev] {
            s.set_read_timeout(Some(timeout))
                .and_then(|()| s.set_write_timeout(Some(timeout)))
                .map_err(|e| dist_err("ring", e))?;
        }
        self.timeout = timeout;
        Ok(())
    }

    /// The error of an earlier failed operation, if any.
    fn usable(&self) -> Result<()> {
        match &self.broken {
            Some(why) => Err(Error::Distributed(format!(
                "the ring failed earlier and cannot be used: {why}"
            ))),
            None => Ok(()),
        }
    }

    /// Marks the ring broken by `e`, shuts its streams down (so that the
    /// peers fail at once instead of waiting for the timeout) and returns `e`.
    fn fail(&mut self, e: Error) -> Error {
        if self.broken.is_none() {
            self.broken = Some(e.to_string());
        }
        shutdown([&self.next, &self.prev]);
        e
    }

    fn prev_rank(&self) -> usize {
        (self.rank + self.world - 1) % self.world
    }

    fn next_rank(&self) -> usize {
        (self.rank + 1) % self.world
    }

    /// Reads a header from `from_next` (else the previous rank) and checks
    /// it against `expected` (its count only when `count` is set); the
    /// error names both sides.
    fn read_header(
        &self,
        from_next: bool,
        expected: &Header,
        count: bool,
        what: &str,
    ) -> Result<Header> {
        let (mut stream, peer) = if from_next {
            (&self.next, self.next_rank())
        } else {
            (&self.prev, self.prev_rank())
        };
        let mut b = [0u8; HEADER_BYTES];
        stream.read_exact(&mut b).map_err(|e| {
            Error::Distributed(format!(
                "receiving {what} from rank {peer}: {}",
                io_words(&e, peer, self.timeout)
            ))
        })?;
        let got = Header::decode(&b);
        let same = got.magic == expected.magic
            && got.op == expected.op
            && got.dtype == expected.dtype
            && got.seq == expected.seq
            && got.part == expected.part
            && (!count || got.count == expected.count);
        if !same {
            let part = got.part != expected.part;
            let mine = if count {
                expected.describe(part)
            } else {
                format!("{} #{}", Header::op_name(expected), expected.seq)
            };
            return Err(Error::Distributed(format!(
                "rank {peer} sent {}, rank {} expected {mine}: the ranks are out of step (different hyperparameters, data or code on different ranks)",
                got.describe(part),
                self.rank
            )));
        }
        Ok(got)
    }
    /// Sums `buf` element-wise over all ranks, in place. Every rank ends
    /// with bit-identical values (each chunk is summed once, then copied).
    pub fn all_reduce<T: Elem>(&mut self, buf: &mut [T]) -> Result<()> {
        self.all_reduce_as(buf, Op::AllReduce)
    }

    /// [`Ring::all_reduce`] on behalf of the collective `op` (a broadcast
    /// or a gather built on the sum): every rank must be running the same
    /// `op`, with the same element type and length, as its `n`-th
    /// collective, or the call fails naming both sides.
    pub fn all_reduce_as<T: Elem>(&mut self, buf: &mut [T], op: Op) -> Result<()> {
        self.usable()?;
        self.ops += 1;
        let (w, r, n, seq) = (self.world, self.rank, buf.len(), self.ops);
        let header = |part: usize| Header::new(op, T::DTYPE, part as u32, seq, n as u64);
        let bounds = |i: usize| (i * n / w, (i + 1) * n / w);
        for s in 0..w - 1 {
            let (send, recv) = ((r + w - s) % w, (r + 2 * w - s - 1) % w);
            let incoming = self.exchange(buf, bounds(send), bounds(recv), header(s))?;
            let (a, b) = bounds(recv);
            for (x, chunk) in buf[a..b].iter_mut().zip(incoming.chunks_exact(T::BYTES)) {
                *x += T::get(chunk);
            }
        }
        for s in 0..w - 1 {
            let (send, recv) = ((r + 1 + w - s) % w, (r + w - s) % w);
            let incoming = self.exchange(buf, bounds(send), bounds(recv), header(w - 1 + s))?;
            let (a, b) = bounds(recv);
            for (x, chunk) in buf[a..b].iter_mut().zip(incoming.chunks_exact(T::BYTES)) {
                *x = T::get(chunk);
            }
        }
        Ok(())
    }

    /// Sends a float32 tensor's shape and values to the next rank (or, with
    /// `forward` false, back to the previous one): pipeline activations and
    /// their gradients.
    pub fn send_tensor(&mut self, forward: bool, t: &tch::Tensor) -> Result<()> {
        self.usable()?;
        let t = t
            .detach()
            .to_kind(tch::Kind::Float)
            .to_device(tch::Device::Cpu)
            .contiguous();
        let shape = t.size();
        let values = Vec::<f32>::try_from(&t.reshape([-1])).map_err(|e| dist_err("send", e))?;
        let dir = usize::from(!forward);
        self.sent[dir] += 1;
        let header = Header::new(
            Op::PipelineSend,
            DTYPE_F32,
            0,
            self.sent[dir],
            values.len() as u64,
        );
        let mut out = Vec::with_capacity(HEADER_BYTES + 4 + shape.len() * 8 + values.len() * 4);
        out.extend_from_slice(&header.encode());
        out.extend_from_slice(&(shape.len() as u32).to_le_bytes());
        for d in &shape {
            out.extend_from_slice(&d.to_le_bytes());
        }
        for v in values {
            v.put(&mut out);
        }
        let (mut stream, peer) = if forward {
            (&self.next, self.next_rank())
        } else {
            (&self.prev, self.prev_rank())
        };
        if let Err(e) = stream.write_all(&out) {
            let e = Error::Distributed(format!(
                "sending pipeline send #{} to rank {peer}: {}",
                self.sent[dir],
                io_words(&e, peer, self.timeout)
            ));
            return Err(self.fail(e));
        }
        Ok(())
    }

    /// Receives a tensor sent by [`Ring::send_tensor`] from the previous rank
    /// (`forward`) or the next one. A header or shape that announces more
    /// than [`MAX_TENSOR_BYTES`], or a shape that does not hold the
    /// announced count, is refused before anything is allocated.
    pub fn recv_tensor(&mut self, forward: bool) -> Result<tch::Tensor> {
        self.usable()?;
        let dir = usize::from(!forward);
        self.received[dir] += 1;
        match self.recv_tensor_checked(forward, self.received[dir]) {
            Ok(t) => Ok(t),
            Err(e) => Err(self.fail(e)),
        }
    }

    fn recv_tensor_checked(&self, forward: bool, seq: u64) -> Result<tch::Tensor> {
        let what = format!("pipeline send #{seq}");
        let expected = Header::new(Op::PipelineSend, DTYPE_F32, 0, seq, 0);
        let header = self.read_header(!forward, &expected, false, &what)?;
        let (mut stream, peer) = if forward {
            (&self.prev, self.prev_rank())
        } else {
            (&self.next, self.next_rank())
        };
        let refuse = |why: String| {
            Error::Distributed(format!(
                "rank {peer} announced {}: {why}; refused",
                header.describe(false)
            ))
        };
        let count = header.count;
        if count.saturating_mul(4) > MAX_TENSOR_BYTES {
            return Err(refuse(format!(
                "{} bytes, more than the {MAX_TENSOR_BYTES}-byte limit of a pipeline tensor",
                count.saturating_mul(4)
            )));
        }
        let io = |e: std::io::Error| {
            Error::Distributed(format!(
                "receiving {what} from rank {peer}: {}",
                io_words(&e, peer, self.timeout)
            ))
        };
        let dims = read_u32(stream).map_err(io)?;
        if dims > MAX_DIMS {
            return Err(refuse(format!(
                "a shape of {dims} dimensions (at most {MAX_DIMS})"
            )));
        }
        let mut shape = Vec::with_capacity(dims as usize);
        for _ in 0..dims {
            let mut b = [0u8; 8];
            stream.read_exact(&mut b).map_err(io)?;
            shape.push(i64::from_le_bytes(b));
        }
        let product = shape.iter().try_fold(1u64, |p, &d| {
            u64::try_from(d).ok().and_then(|d| p.checked_mul(d))
        });
        if product != Some(count) {
            return Err(refuse(format!(
                "a shape {shape:?} that does not hold {count} values"
            )));
        }
        let mut bytes = vec![0u8; count as usize * 4];
        stream.read_exact(&mut bytes).map_err(io)?;
        let values: Vec<f32> = bytes.chunks_exact(4).map(f32::get).collect();
        Ok(tch::Tensor::from_slice(&values).view(shape.as_slice()))
    }

    /// Sends `buf[send]` to the next rank under `header` while receiving
    /// the previous rank's chunk of the size of `recv` (both at once, so
    /// neither blocks), after checking that the previous rank's header is
    /// `header` too. On any failure the ring is broken: both streams are
    /// shut down, which also ends the send running beside the receive.
    fn exchange<T: Elem>(
        &mut self,
        buf: &[T],
        send: (usize, usize),
        recv: (usize, usize),
        header: Header,
    ) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(HEADER_BYTES + (send.1 - send.0) * T::BYTES);
        out.extend_from_slice(&header.encode());
        for &x in &buf[send.0..send.1] {
            x.put(&mut out);
        }
        let mut incoming = vec![0u8; (recv.1 - recv.0) * T::BYTES];
        let what = header.describe(false);
        let (prev_rank, next_rank) = (self.prev_rank(), self.next_rank());
        let header_out = AtomicBool::new(false);
        let this = &*self;
        let (next, prev) = (&this.next, &this.prev);
        let result = std::thread::scope(|scope| {
            let sender = scope.spawn(|| send_all(next, &out, &header_out, [next, prev]));
            let received = this.read_header(false, &header, true, &what).and_then(|_| {
                let mut p = prev;
                p.read_exact(&mut incoming).map_err(|e| {
                    Error::Distributed(format!(
                        "receiving {what} from rank {prev_rank}: {}",
                        io_words(&e, prev_rank, this.timeout)
                    ))
                })
            });
            if received.is_err() {
                // Let our own header reach the next rank first, so that it
                // too can say what each side was doing; then stop the send.
                let wait = Instant::now();
                while !header_out.load(Ordering::Acquire)
                    && !sender.is_finished()
                    && wait.elapsed() < Duration::from_secs(2)
                {
                    std::thread::sleep(Duration::from_millis(1));
                }
                shutdown([next, prev]);
            }
            let sent = sender.join().expect("sender thread");
            received?;
            sent.map_err(|e| {
                Error::Distributed(format!(
                    "sending {what} to rank {next_rank}: {}",
                    io_words(&e, next_rank, this.timeout)
                ))
            })
        });
        match result {
            Ok(()) => Ok(incoming),
            Err(e) => Err(self.fail(e)),
        }
    }
}
