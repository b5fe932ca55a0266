//! Data parallelism between processes (pods): a rendezvous at
//! `MASTER_ADDR:MASTER_PORT`, then a ring of TCP connections over which
//! tensors are summed with a ring all-reduce (reduce-scatter, then
//! all-gather), so each rank sends about `2 x size` bytes per call whatever the
//! number of ranks. Tensors on any device go through host memory. Every
//! message carries the operation, its number, element type and count, which
//! the receiver checks (see [`ring`]): ranks out of step fail at once,
//! naming what each side was doing.

pub mod ring;

use std::time::Duration;

use tch::{Kind, Tensor};

pub use ring::{Op, Ring};

use crate::contract::ResourceConfig;
use crate::error::{Error, Result};

/// Where this process stands among the ranks of the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistConfig {
    pub rank: usize,
    pub world: usize,
    pub master_addr: String,
    pub master_port: u16,
}

impl DistConfig {
    /// From PyTorch's variables (`WORLD_SIZE`, `RANK`, `MASTER_ADDR`,
    /// `MASTER_PORT`, or torchrun's `PET_*`), else from `resourceconfig.json`
    /// (rank = position of `current_host`, master = first host, port 29500).
    pub fn from_env(resources: &ResourceConfig) -> Result<Self> {
        let var = |names: &[&str]| names.iter().find_map(|n| std::env::var(n).ok());
        let bad = |name: &str, why: String| Error::Config {
            path: format!("${name}").into(),
            reason: why,
        };
        let parse = |name: &str, value: Option<String>| -> Result<Option<usize>> {
            value
                .map(|v| {
                    v.trim()
                        .parse::<usize>()
                        .map_err(|_| bad(name, format!("{v:?} is not a number")))
                })
                .transpose()
        };
        let mut world = parse("WORLD_SIZE", var(&["WORLD_SIZE", "PET_NNODES"]))?;
        let mut rank = parse("RANK", var(&["RANK", "PET_NODE_RANK"]))?;
        let mut master_addr = var(&["MASTER_ADDR", "PET_MASTER_ADDR"]);
        if world.is_none() && resources.hosts.len() > 1 {
            world = Some(resources.hosts.len());
            rank = resources
                .current_host
                .as_ref()
                .and_then(|h| resources.hosts.iter().position(|x| x == h));
            master_addr = master_addr.or_else(|| resources.hosts.first().cloned());
        }
        let world = world.unwrap_or(1);
        let rank = rank.unwrap_or(0);
        if world == 0 || rank >= world {
            return Err(bad(
                "RANK",
                format!("rank {rank} is not below WORLD_SIZE {world}"),
            ));
        }
        let master_port = match var(&["MASTER_PORT", "PET_MASTER_PORT"]) {
            Some(p) => p
                .trim()
                .parse()
                .map_err(|_| bad("MASTER_PORT", format!("{p:?} is not a port")))?,
            None => 29500,
        };
        let master_addr = master_addr.unwrap_or_else(|| "127.0.0.1".into());
        Ok(DistConfig {
            rank,
            world,
            master_addr,
            master_port,
        })
    }

    /// One process alone.
    pub fn single() -> Self {
        DistConfig {
            rank: 0,
            world: 1,
            master_addr: "127.0.0.1".into(),
            master_port: 0,
        }
    }
}

/// The communicator of one rank: a no-op for one rank.
#[derive(Debug)]
pub struct Comm {
    pub rank: usize,
    pub world: usize,
    ring: Option<Ring>,
}

impl Comm {
    /// A communicator for a run without peers.
    pub fn single() -> Self {
        Comm {
            rank: 0,
            world: 1,
            ring: None,
        }
    }

    /// Joins the ring described by `config`, waiting up to `timeout` for peers.
    pub fn connect(config: &DistConfig, timeout: Duration) -> Result<Self> {
        if config.world == 1 {
            return Ok(Comm::single());
        }
        let ring = Ring::connect(config, timeout)?;
        Ok(Comm {
            rank: config.rank,
            world: config.world,
            ring: Some(ring),
        })
    }

    /// How long each read and write of the ring waits for a peer
    /// (`KILN_COMM_TIMEOUT_SECONDS`, 900 s by default).
    pub fn set_timeout(&mut self, timeout: Duration) -> Result<()> {
        match self.ring.as_mut() {
            Some(ring) => ring.set_timeout(timeout),
            None => Ok(()),
        }
    }

    /// Element-wise sums of `tensors` over all ranks, each returned with its
    /// own shape, kind and device. Float64 tensors travel as f64, the rest as f32.
    pub fn sum(&mut self, tensors: &[&Tensor]) -> Result<Vec<Tensor>> {
        self.sum_as(tensors, Op::AllReduce)
    }

    /// [`Comm::sum`] on behalf of the collective `op`, which the ring checks
    /// every rank is running.
    fn sum_as(&mut self, tensors: &[&Tensor], op: Op) -> Result<Vec<Tensor>> {
        let Some(ring) = self.ring.as_mut() else {
            return Ok(tensors.iter().map(|t| t.shallow_clone()).collect());
        };
        let wide = tensors.iter().any(|t| t.kind() == Kind::Double);
        let wire = if wide { Kind::Double } else { Kind::Float };
        let flat = Tensor::cat(
            &tensors
                .iter()
                .map(|t| {
                    t.detach()
                        .to_kind(wire)
                        .to_device(tch::Device::Cpu)
                        .reshape([-1])
                })
                .collect::<Vec<_>>(),
            0,
        );
        let summed = if wide {
            let mut buf = Vec::<f64>::try_from(&flat)?;
            ring.all_reduce_as(&mut buf, op)?;
            Tensor::from_slice(&buf)
        } else {
            let mut buf = Vec::<f32>::try_from(&flat)?;
            ring.all_reduce_as(&mut buf, op)?;
            Tensor::from_slice(&buf)
        };
        let mut offset = 0;
        Ok(tensors
            .iter()
            .map(|t| {
                let n = t.numel() as i64;
                let part = summed
                    .narrow(0, offset, n)
                    .view(t.size().as_slice())
                    .to_kind(t.kind())
                    .to_device(t.device());
                offset += n;
                part
            })
            .collect())
    }

    /// Sums plain numbers over all ranks (counts, losses, stop flags).
    pub fn sum_f64(&mut self, values: &[f64]) -> Result<Vec<f64>> {
        self.sum_f64_as(values, Op::AllReduce)
    }

    fn sum_f64_as(&mut self, values: &[f64], op: Op) -> Result<Vec<f64>> {
        let mut buf = values.to_vec();
        if let Some(ring) = self.ring.as_mut() {
            ring.all_reduce_as(&mut buf, op)?;
        }
        Ok(buf)
    }

    /// Every rank's `values` on every rank (an all-gather: lengths may
    /// differ between ranks). Two all-reduces, the lengths and then the
    /// values, each rank filling its own segment with the others' zeros.
    pub fn gather_f64(&mut self, values: &[f64]) -> Result<Vec<Vec<f64>>> {
        if self.ring.is_none() {
            return Ok(vec![values.to_vec()]);
        }
        let mut lengths = vec![0.0; self.world];
        lengths[self.rank] = values.len() as f64;
        let lengths: Vec<usize> = self
            .sum_f64_as(&lengths, Op::Gather)?
            .into_iter()
            .map(|l| l as usize)
            .collect();
        let start: usize = lengths[..self.rank].iter().sum();
        let mut all = vec![0.0; lengths.iter().sum()];
        all[start..start + values.len()].copy_from_slice(values);
        let all = self.sum_f64_as(&all, Op::Gather)?;
        let mut at = 0;
        Ok(lengths
            .iter()
            .map(|&l| {
                at += l;
                all[at - l..at].to_vec()
            })
            .collect())
    }

    /// Sends a tensor down the pipeline (`forward`) or back up.
    pub fn send(&mut self, forward: bool, t: &Tensor) -> Result<()> {
        self.ring
            .as_mut()
            .ok_or_else(|| Error::Distributed("no peers to send to".into()))?
            .send_tensor(forward, t)
    }

    /// Receives a tensor from the previous rank (`forward`) or the next one.
    pub fn recv(&mut self, forward: bool) -> Result<Tensor> {
        self.ring
            .as_mut()
            .ok_or_else(|| Error::Distributed("no peers to receive from".into()))?
            .recv_tensor(forward)
    }

    /// Rank 0's tensors on every rank.
    pub fn broadcast(&mut self, tensors: &[&Tensor]) -> Result<Vec<Tensor>> {
        if self.rank == 0 || self.ring.is_none() {
            return self.sum_as(tensors, Op::Broadcast);
        }
        let zeros: Vec<Tensor> = tensors.iter().map(|t| t.zeros_like()).collect();
        self.sum_as(&zeros.iter().collect::<Vec<_>>(), Op::Broadcast)
    }
}

#[cfg(test)]
pub(crate) mod tests;
