//! Data parallelism across processes and machines (`--nodes`): one process per node, each training
//! one shard of every step's batch on its device, their gradients summed by burn-collective's global
//! all-reduce (a ring over websockets between the nodes, which a coordinator introduces to each
//! other). Every node then takes the same optimiser step on the same sum, so the replicas stay
//! identical; node 0 hosts the coordinator, validates, logs and writes the checkpoints.
//!
//! A node that dies leaves the others waiting in the all-reduce, which has no timeout of its own: a
//! watchdog stops a node that has waited longer than `timeout` with a message, and the last
//! checkpoint stays as it was.

use std::ops::Range;
use std::sync::mpsc::{RecvTimeoutError, Sender, channel};
use std::time::Duration;

use burn::collective::{
    CollectiveConfig, PeerId, ReduceOperation, all_reduce, finish_collective, register,
};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorPrimitive};

use super::config::Nodes;
use super::parallel::shards;
use super::step::{self, Batch, Losses, Optim, StepOutput};
use crate::error::{Error, Result};
use crate::model::ImageGpt;

/// This process's place in a multi-node run, registered with the collective for the whole run.
pub struct NodeSession<B: Backend> {
    nodes: Nodes,
    device: B::Device,
    /// Beats before and after every all-reduce; the watchdog thread ends the process when one
    /// all-reduce outlasts the timeout.
    heartbeat: Sender<Beat>,
    /// Time spent in all-reduces (waiting for the slower node included), reported at the end.
    reducing: std::cell::Cell<Duration>,
}

enum Beat {
    Waiting,
    Done,
}

impl<B: Backend> NodeSession<B> {
    /// Joins the run: node 0 first starts the coordinator, then every node registers its one device.
    pub fn join(nodes: &Nodes, device: &B::Device) -> Result<Self> {
        // burn-communication logs every connection at INFO to stderr unless a subscriber is already
        // set: set a silent one (a second call, or one set before, changes nothing).
        let _ =
            tracing::subscriber::set_global_default(tracing::subscriber::NoSubscriber::default());
        if nodes.rank == 0 {
            start_coordinator(nodes.coordinator_port()?)?;
        }
        let config = CollectiveConfig::default()
            .with_num_devices(1)
            .with_num_nodes(nodes.count)
            .with_global_address(
                format!("ws://{}", nodes.coordinator)
                    .parse()
                    .map_err(|e| Error::invalid(format!("bad --coordinator: {e}")))?,
            )
            .with_node_address(
                format!("ws://{}", nodes.address)
                    .parse()
                    .map_err(|e| Error::invalid(format!("bad --node-address: {e}")))?,
            )
            .with_data_service_port(nodes.address_port()?);
        quiet_collective_panics();
        let heartbeat = watchdog(nodes.rank, nodes.count, nodes.timeout);
        heartbeat.send(Beat::Waiting).ok();
        register::<B>(PeerId::from(0), device.clone(), config).map_err(|e| {
            Error::invalid(format!(
                "node {} cannot join the run through {}: {e:?}",
                nodes.rank, nodes.coordinator
            ))
        })?;
        heartbeat.send(Beat::Done).ok();
        Ok(Self {
            nodes: nodes.clone(),
            device: device.clone(),
            heartbeat,
            reducing: Default::default(),
        })
    }

    /// This node's rows of a step's `batch` rows.
    pub fn rows(&self, batch: usize) -> Range<usize> {
        shards(batch, self.nodes.count as usize)[self.nodes.rank as usize].clone()
    }

    /// Runs one all-reduce under the watchdog. A node that dies mid-run closes its connections, and
    /// burn-collective panics on its threads and ours: that becomes this error instead.
    fn summed<T>(
        &self,
        f: impl FnOnce() -> std::result::Result<T, burn::collective::CollectiveError>,
    ) -> Result<T> {
        self.heartbeat.send(Beat::Waiting).ok();
        IN_ALL_REDUCE.set(true);
        let started = std::time::Instant::now();
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        self.reducing.set(self.reducing.get() + started.elapsed());
        IN_ALL_REDUCE.set(false);
        self.heartbeat.send(Beat::Done).ok();
        let (rank, count) = (self.nodes.rank, self.nodes.count);
        let lost = |why: String| {
            Error::invalid(format!(
                "node {rank} of {count} lost the other nodes in an all-reduce ({why}): one has \
                 stopped or cannot be reached. The run stops here; its last checkpoint is kept \
                 (continue every node with --resume)"
            ))
        };
        match out {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(lost(format!("{e:?}"))),
            Err(_) => Err(lost("a connection closed".into())),
        }
    }
}

impl<B: Backend> Drop for NodeSession<B> {
    fn drop(&mut self) {
        eprintln!(
            "node {}: {:.1} s in all-reduces (waiting for the other nodes included)",
            self.nodes.rank,
            self.reducing.get().as_secs_f64()
        );
        // Leaving tells the coordinator; a node whose coordinator already left (node 0 exits first)
        // could wait for it forever, and after another node died the collective's server is gone
        // and this panics. Neither has anything left to undo: wait a few seconds at most.
        let (done, finished) = channel();
        std::thread::spawn(move || {
            IN_ALL_REDUCE.set(true);
            let _ = std::panic::catch_unwind(|| finish_collective::<B>(PeerId::from(0)));
            let _ = done.send(());
        });
        let _ = finished.recv_timeout(Duration::from_secs(5));
    }
}

/// One step on this node's shard (`batch`, rows `rows` of a batch of `total`): its gradients and
/// losses summed with the other nodes' (each weighted by its share of the batch), then the one
/// optimiser step every node takes.
pub fn step<B: AutodiffBackend>(
    model: ImageGpt<B>,
    optimizer: &mut Optim<B>,
    batch: &Batch<B>,
    (rows, total): (Range<usize>, usize),
    session: &NodeSession<B::InnerBackend>,
    lr: f64,
    grad_clip: f64,
) -> Result<(ImageGpt<B>, StepOutput<B::InnerBackend>)> {
    let weight = rows.len() as f64 / total as f64;
    let (grads, losses) = step::weighted_gradients(&model, batch, weight);
    let grads = session
        .summed(|| grads.all_reduce::<B::InnerBackend>(PeerId::from(0), ReduceOperation::Sum))?;
    // The losses travel as one small tensor: total, generative and (if any) classification.
    let labelled = losses.classification.is_some();
    let mut parts = vec![losses.total, losses.generative];
    parts.extend(losses.classification);
    let packed = Tensor::cat(parts, 0)
        .mul_scalar(weight)
        .to_device(&session.device);
    let summed = session.summed(|| {
        all_reduce::<B::InnerBackend>(
            PeerId::from(0),
            packed.into_primitive().tensor(),
            ReduceOperation::Sum,
        )
    })?;
    let summed = Tensor::<B::InnerBackend, 1>::from_primitive(TensorPrimitive::Float(summed));
    let part = |i: usize| summed.clone().slice(i..i + 1);
    let losses = Losses {
        total: part(0),
        generative: part(1),
        classification: labelled.then(|| part(2)),
    };
    let (model, grad_norm) = step::apply(model, optimizer, grads, lr, grad_clip);
    Ok((model, StepOutput { losses, grad_norm }))
}

thread_local! {
    /// Whether this thread is inside an all-reduce, whose panics [`NodeSession::summed`] reports.
    static IN_ALL_REDUCE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// When a node dies, burn-collective's runtime threads panic (closed websockets) and so does the
/// all-reduce on ours; the one-line error of [`NodeSession::summed`] says what happened instead of
/// their traces. Other panics print as before.
fn quiet_collective_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let runtime = std::thread::current()
                .name()
                .is_some_and(|n| n.starts_with("tokio-"));
            if !runtime && !IN_ALL_REDUCE.get() {
                default(info);
            }
        }));
    });
}

/// Runs the coordinator (burn-collective's global orchestrator) on its own thread and runtime.
fn start_coordinator(port: u16) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| Error::invalid(format!("cannot start the coordinator: {e}")))?;
    std::thread::Builder::new()
        .name("igpt-coordinator".into())
        .spawn(move || {
            runtime.block_on(burn::collective::start_global_orchestrator_in_process(port))
        })
        .map_err(|e| Error::invalid(format!("cannot start the coordinator: {e}")))?;
    Ok(())
}

/// A thread that ends the process when an all-reduce waits longer than `timeout`: the collective
/// itself would wait forever for a node that has died.
fn watchdog(rank: u32, count: u32, timeout: Duration) -> Sender<Beat> {
    let (sender, beats) = channel();
    std::thread::spawn(move || {
        let mut waiting = false;
        loop {
            let beat = if waiting {
                beats.recv_timeout(timeout)
            } else {
                beats.recv().map_err(|_| RecvTimeoutError::Disconnected)
            };
            match beat {
                Ok(Beat::Waiting) => waiting = true,
                Ok(Beat::Done) => waiting = false,
                Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => {
                    eprintln!(
                        "error: node {rank} of {count} waited {} s for the other nodes in an all-reduce: \
                         one has stopped or cannot be reached. The run stops here; its last checkpoint \
                         is kept (continue every node with --resume)",
                        timeout.as_secs()
                    );
                    std::process::exit(70);
                }
            }
        }
    });
    sender
}
