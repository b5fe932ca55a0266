//! The TCP ring: rendezvous through rank 0, one connection to the next rank
//! and one from the previous, and the ring all-reduce over them.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
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
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(dist_err(what, e)),
        }
    }
}

impl Ring {
    /// Rendezvous, then connects the ring. Every rank listens on an
    /// ephemeral port for its previous rank; rank 0 also serves the
    /// rendezvous on `MASTER_PORT` and tells everyone the others' addresses.
    pub fn connect(config: &DistConfig, timeout: Duration) -> Result<Self> {
        let deadline = Instant::now() + timeout;
        let (rank, world) = (config.rank, config.world);
        let ring_listener =
            TcpListener::bind(("0.0.0.0", 0)).map_err(|e| dist_err("ring listener", e))?;
        let ring_port = ring_listener
            .local_addr()
            .map_err(|e| dist_err("ring listener", e))?
            .port();
        let addrs: Vec<String> = if rank == 0 {
            let master = TcpListener::bind(("0.0.0.0", config.master_port))
                .map_err(|e| dist_err(&format!("listening on port {}", config.master_port), e))?;
            let mut addrs = vec![None; world];
            addrs[0] = Some(format!("{}:{ring_port}", config.master_addr));
            let mut peers = Vec::new();
            for _ in 1..world {
                let (mut s, peer) =
                    accept_before(&master, deadline, "waiting for ranks at the rendezvous")?;
                let mut magic = [0u8; 4];
                s.read_exact(&mut magic)
                    .map_err(|e| dist_err("rendezvous", e))?;
                let r = read_u32(&mut s).map_err(|e| dist_err("rendezvous", e))? as usize;
                let w = read_u32(&mut s).map_err(|e| dist_err("rendezvous", e))? as usize;
                let port = read_u32(&mut s).map_err(|e| dist_err("rendezvous", e))?;
                if &magic != MAGIC || w != world || r == 0 || r >= world || addrs[r].is_some() {
                    return Err(Error::Distributed(format!(
                        "rendezvous: {peer} announced rank {r} of {w}; expected a new rank below {world}"
                    )));
                }
                let ip: IpAddr = peer.ip();
                addrs[r] = Some(SocketAddr::new(ip, port as u16).to_string());
                peers.push(s);
            }
            let addrs: Vec<String> = addrs
                .into_iter()
                .map(|a| a.expect("every rank joined"))
                .collect();
            let table = addrs.join("\n");
            for s in &mut peers {
                s.write_all(&(table.len() as u32).to_le_bytes())
                    .and_then(|_| s.write_all(table.as_bytes()))
                    .map_err(|e| dist_err("rendezvous", e))?;
            }
            addrs
        } else {
            let master = format!("{}:{}", config.master_addr, config.master_port);
            let mut s = connect_retry(&master, deadline)?;
            let mut hello = MAGIC.to_vec();
            for v in [rank as u32, world as u32, ring_port as u32] {
                hello.extend_from_slice(&v.to_le_bytes());
            }
            s.write_all(&hello).map_err(|e| dist_err("rendezvous", e))?;
            s.set_read_timeout(Some(
                deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_secs(1)),
            ))
            .map_err(|e| dist_err("rendezvous", e))?;
            let len =
                read_u32(&mut s).map_err(|e| dist_err("waiting for the rendezvous table", e))?;
            let mut table = vec![0u8; len as usize];
            s.read_exact(&mut table)
                .map_err(|e| dist_err("rendezvous table", e))?;
            String::from_utf8_lossy(&table)
                .lines()
                .map(String::from)
                .collect()
        };
        let mut next = connect_retry(&addrs[(rank + 1) % world], deadline)?;
        next.write_all(&(rank as u32).to_le_bytes())
            .map_err(|e| dist_err("ring", e))?;
        let (mut prev, _) =
            accept_before(&ring_listener, deadline, "waiting for the previous rank")?;
        let from = read_u32(&mut prev).map_err(|e| dist_err("ring", e))? as usize;
        if from != (rank + world - 1) % world {
            return Err(Error::Distributed(format!(
                "ring: rank {from} connected, expected the previous rank"
            )));
        }
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
