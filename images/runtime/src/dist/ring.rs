//! The TCP ring: rendezvous through rank 0, one connection to the next rank
//! and one from the previous, and the ring all-reduce over them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::DistConfig;
use crate::error::{Error, Result};

const MAGIC: &[u8; 4] = b"KILN";

/// Numbers the ring can sum.
pub trait Elem: Copy + std::ops::AddAssign + Send + Sync {
    const BYTES: usize;
    fn put(self, out: &mut Vec<u8>);
    fn get(bytes: &[u8]) -> Self;
}

impl Elem for f32 {
    const BYTES: usize = 4;
    fn put(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn get(b: &[u8]) -> Self {
        f32::from_le_bytes(b.try_into().expect("4 bytes"))
    }
}

impl Elem for f64 {
    const BYTES: usize = 8;
    fn put(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn get(b: &[u8]) -> Self {
        f64::from_le_bytes(b.try_into().expect("8 bytes"))
    }
}

/// This rank's two ring connections.
#[derive(Debug)]
pub struct Ring {
    rank: usize,
    world: usize,
    next: TcpStream,
    prev: TcpStream,
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

fn read_u32(s: &mut TcpStream) -> std::io::Result<u32> {
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
            let mut table = vec![0u8; u32_at(&head, 8) as usize];
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
        // A peer that dies without closing its socket must not hang us forever.
        let idle = Duration::from_secs(
            std::env::var("KILN_COMM_TIMEOUT_SECONDS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(900),
        );
        prev.set_read_timeout(Some(idle))
            .map_err(|e| dist_err("ring", e))?;
        Ok(Ring {
            rank,
            world,
            next,
            prev,
        })
    }

    /// Sums `buf` element-wise over all ranks, in place. Every rank ends
    /// with bit-identical values (each chunk is summed once, then copied).
    pub fn all_reduce<T: Elem>(&mut self, buf: &mut [T]) -> Result<()> {
        let (w, r, n) = (self.world, self.rank, buf.len());
        let bounds = |i: usize| (i * n / w, (i + 1) * n / w);
        for s in 0..w - 1 {
            let (send, recv) = ((r + w - s) % w, (r + 2 * w - s - 1) % w);
            let incoming = self.exchange(buf, bounds(send), bounds(recv))?;
            let (a, b) = bounds(recv);
            for (x, chunk) in buf[a..b].iter_mut().zip(incoming.chunks_exact(T::BYTES)) {
                *x += T::get(chunk);
            }
        }
        for s in 0..w - 1 {
            let (send, recv) = ((r + 1 + w - s) % w, (r + w - s) % w);
            let incoming = self.exchange(buf, bounds(send), bounds(recv))?;
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
        let t = t
            .detach()
            .to_kind(tch::Kind::Float)
            .to_device(tch::Device::Cpu)
            .contiguous();
        let shape = t.size();
        let values = Vec::<f32>::try_from(&t.reshape([-1])).map_err(|e| dist_err("send", e))?;
        let mut out = Vec::with_capacity(4 + shape.len() * 8 + values.len() * 4);
        out.extend_from_slice(&(shape.len() as u32).to_le_bytes());
        for d in &shape {
            out.extend_from_slice(&d.to_le_bytes());
        }
        for v in values {
            v.put(&mut out);
        }
        let stream = if forward {
            &mut self.next
        } else {
            &mut self.prev
        };
        stream
            .write_all(&out)
            .map_err(|e| dist_err("sending a pipeline tensor", e))
    }

    /// Receives a tensor sent by [`Ring::send_tensor`] from the previous rank
    /// (`forward`) or the next one.
    pub fn recv_tensor(&mut self, forward: bool) -> Result<tch::Tensor> {
        let stream = if forward {
            &mut self.prev
        } else {
            &mut self.next
        };
        let err = |e: std::io::Error| dist_err("receiving a pipeline tensor", e);
        let dims = read_u32(stream).map_err(err)? as usize;
        let mut shape = Vec::with_capacity(dims);
        for _ in 0..dims {
            let mut b = [0u8; 8];
            stream.read_exact(&mut b).map_err(err)?;
            shape.push(i64::from_le_bytes(b));
        }
        let count: i64 = shape.iter().product();
        let mut bytes = vec![0u8; count.max(0) as usize * 4];
        stream.read_exact(&mut bytes).map_err(err)?;
        let values: Vec<f32> = bytes.chunks_exact(4).map(f32::get).collect();
        Ok(tch::Tensor::from_slice(&values).view(shape.as_slice()))
    }

    /// Sends `buf[send]` to the next rank while receiving the previous
    /// rank's chunk of the size of `recv` (both at once, so neither blocks).
    fn exchange<T: Elem>(
        &mut self,
        buf: &[T],
        send: (usize, usize),
        recv: (usize, usize),
    ) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity((send.1 - send.0) * T::BYTES);
        for &x in &buf[send.0..send.1] {
            x.put(&mut out);
        }
        let mut incoming = vec![0u8; (recv.1 - recv.0) * T::BYTES];
        let next = &mut self.next;
        let prev = &mut self.prev;
        std::thread::scope(|scope| {
            let sender = scope.spawn(move || next.write_all(&out));
            let received = prev.read_exact(&mut incoming);
            let sent = sender.join().expect("sender thread");
            sent.map_err(|e| dist_err("sending to the next rank", e))?;
            received.map_err(|e| dist_err("receiving from the previous rank", e))
        })?;
        Ok(incoming)
    }
}
