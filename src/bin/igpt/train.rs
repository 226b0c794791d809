//! `igpt train` and `igpt export`: fit a model on a dataset, then write it out with a measured card.

use std::ops::ControlFlow;
use std::path::PathBuf;

use anyhow::{Context, bail};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use clap::{Args, ValueEnum};
use igpt::Precision;
use igpt::data::DataSpec;
use igpt::data::stream::ShardStream;
use igpt::eval::sequence_nll;
use igpt::model::objective::{self, Objective};
use igpt::store::{self, ModelCard, StoredModel, WeightPrecision};
use igpt::train::run::{self, Checkpoint};
use igpt::train::{self, Event, Nodes, Start, TrainConfig, TrainData};
use indicatif::{ProgressBar, ProgressStyle};

use crate::backend::{BackendJob, DeviceKind};
use crate::{baselines, heap, history};
use crate::{log_line, progress, tokenize_all};

#[derive(Args)]
pub struct TrainArgs {
    /// Training images, e.g. fashion-mnist:train; `shards:DIR` (tar shards) streams them.
    #[arg(long, default_value = "fashion-mnist:train")]
    data: DataSpec,
    /// Validation images, scored every --eval-every steps, e.g. fashion-mnist:test.
    #[arg(long)]
    val: Option<DataSpec>,
    /// Start from this model directory: its palette, size and weights (fine-tuning; a run's
    /// checkpoint/ works too). The card of the result records what it started from...
    #[arg(long, conflicts_with_all = ["preset", "palette"])]
    model: Option<PathBuf>,
    /// ...or a fresh model of this preset size (tiny, small, igpt-s, ..., or WIDTHxLAYERSxHEADS)...
    #[arg(long, requires = "palette")]
    preset: Option<String>,
    /// ...for this palette directory (from `igpt palette`).
    #[arg(long)]
    palette: Option<PathBuf>,
    /// What a fresh model learns to predict: the next pixel from the ones before it
    /// (autoregressive, the default), or pixels hidden at random from all the others (bert). A model
    /// given with --model keeps its own.
    #[arg(long, value_enum)]
    objective: Option<ObjectiveArg>,
    /// BERT: the probability that each pixel is hidden [default: 0.15, the paper's].
    #[arg(long, value_name = "P")]
    mask_prob: Option<f64>,
    /// Run directory: train.json, log.csv, checkpoint/.
    #[arg(short, long)]
    output: PathBuf,
    /// Continue the run in --output from its checkpoint, with its saved settings.
    #[arg(long)]
    resume: bool,
    /// Images per step.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Optimisation steps (default: one epoch).
    #[arg(long, conflicts_with = "epochs")]
    steps: Option<usize>,
    /// Passes over the training set, instead of --steps.
    #[arg(long)]
    epochs: Option<f64>,
    /// Peak learning rate (Adam, β = 0.9, 0.95).
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Warmup steps (default: 5% of the run).
    #[arg(long)]
    warmup: Option<usize>,
    /// Global gradient-norm clip.
    #[arg(long, default_value_t = 1.0)]
    grad_clip: f64,
    /// Random horizontal flips (for natural images; not for digits or text).
    #[arg(long)]
    flip: bool,
    /// Random crops: pad each side by N pixels (repeating the edge) and cut the image back out at a
    /// random place, i.e. shifts of up to N pixels each way.
    #[arg(long, default_value_t = 0, value_name = "N")]
    crop: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Use only the first N training images.
    #[arg(long)]
    limit: Option<usize>,
    /// Keep the last N training images out of training and validate on them (instead of --val):
    /// the test split then chooses nothing.
    #[arg(long, default_value_t = 0, value_name = "N", conflicts_with = "val")]
    holdout: usize,
    /// Streamed data (`shards:DIR`): how many images are shuffled together, the shuffle buffer.
    /// Memory holds about three such windows, however large the dataset; each epoch also reads the
    /// shards in a new order. Other datasets are read whole and shuffled whole.
    #[arg(long, default_value_t = igpt::data::stream::DEFAULT_WINDOW, value_name = "N")]
    shuffle_window: usize,
    #[arg(long, default_value_t = 10)]
    log_every: usize,
    #[arg(long, default_value_t = 500)]
    eval_every: usize,
    /// Validation images per evaluation.
    #[arg(long, default_value_t = 1000)]
    eval_images: usize,
    #[arg(long, default_value_t = 500)]
    checkpoint_every: usize,
    /// Also keep the model every N steps in RUNDIR/milestones/step-N (for probing a run as it goes).
    #[arg(long, default_value_t = 0, value_name = "N")]
    keep_every: usize,
    #[arg(long, value_enum, default_value_t)]
    pub device: DeviceKind,
    /// Data parallelism: split each batch across these devices of --device's kind, one replica each
    /// (`--device cuda --devices 0,1`: two GPUs), their gradients all-reduced by Burn's collective
    /// engine before one optimiser step. The same run as on one device up to f32 rounding; a run
    /// may resume on another count. On flex and wgpu the replicas share the one device.
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    devices: Vec<u16>,
    /// Data parallelism across processes or machines: the number of nodes, one process each, which
    /// split every batch between them (start each with the same settings and its --node-rank).
    #[arg(
        long,
        value_name = "N",
        requires = "node_rank",
        conflicts_with = "devices"
    )]
    nodes: Option<u32>,
    /// This process's place among --nodes, from 0. Node 0 starts the coordinator, validates, logs
    /// and writes the checkpoints; the others train in step with it.
    #[arg(long, value_name = "R", requires = "nodes")]
    node_rank: Option<u32>,
    /// The coordinator's HOST:PORT, the same for every node (node 0 listens on its port).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:29400")]
    coordinator: String,
    /// This node's HOST:PORT, where the other nodes reach it [default: 127.0.0.1 and the
    /// coordinator's port + 1 + rank].
    #[arg(long, value_name = "HOST:PORT")]
    node_address: Option<String>,
    /// Stop a node that waits longer than this for the others in an all-reduce (one has died); node
    /// 0's validation counts as waiting for the rest, so keep it above that.
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    node_timeout: u64,
    /// Matrix products in bf16 or f16 (mixed precision: weights, optimizer, norms and loss stay f32).
    /// On GPUs with tensor cores, and in bf16 on CPUs with AMX (Intel Xeon since Sapphire Rapids) on
    /// flex, where 128x8x4 trains 1.15x faster than in f32; other CPUs compute them correctly but slower.
    #[arg(long, value_enum, default_value_t)]
    precision: Precision,
}

/// `--objective`'s values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ObjectiveArg {
    Autoregressive,
    Bert,
}

#[derive(Args)]
pub struct ExportArgs {
    /// Run directory written by `igpt train`.
    #[arg(long)]
    run: PathBuf,
    /// Output model directory, e.g. models/fmnist-small.
    #[arg(short, long)]
    output: PathBuf,
    /// Store the weights as f16 (half the size; the card's number is measured on what is written).
    #[arg(long)]
    f16: bool,
    /// Test images to measure bits/token on; default: the run's validation set.
    #[arg(long)]
    test: Option<DataSpec>,
    /// Score only the first N test images.
    #[arg(long)]
    limit: Option<usize>,
    /// Name recorded in the card; default: the output folder's name.
    #[arg(long)]
    name: Option<String>,
    /// A free-text note for the card (e.g. why this size was chosen).
    #[arg(long)]
    note: Option<String>,
    #[arg(long, value_enum, default_value_t)]
    pub device: DeviceKind,
}

impl BackendJob for TrainArgs {
    type Output = ();

    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<()> {
        type A<B> = Autodiff<B>;
        let resume = self.resume;
        let start: Start<A<B>> = if resume {
            Start::Resume(
                Checkpoint::load(&self.output, &device)
                    .context("cannot resume: no readable checkpoint in the run directory")?,
            )
        } else if let Some(dir) = &self.model {
            let mut parent: StoredModel<A<B>> = store::load_dir(dir, &device)?;
            if let Some(asked) = self.objective()?
                && asked != parent.config.objective
            {
                bail!(
                    "{} was trained {}: a model keeps its objective (train a fresh one with --preset for another)",
                    dir.display(),
                    parent.config.objective.describe()
                );
            }
            // The parent's measurements, notes and history are not the new model's (its history
            // goes into started_from.json); keep only what the image geometry says.
            parent.card = ModelCard::for_images(&parent.tokenizer());
            Start::Model(parent)
        } else if let (Some(preset), Some(palette)) = (&self.preset, &self.palette) {
            let tokenizer = store::read_tokenizer(palette)?;
            let objective = self.objective()?.unwrap_or_default();
            Start::Model(StoredModel::fresh(
                preset, tokenizer, objective, self.seed, &device,
            )?)
        } else {
            bail!("give --model DIR, or --preset NAME with --palette DIR (or --resume)");
        };
        let tokenizer = start.stored().tokenizer();
        let saved = if resume {
            let mut config = run::read_config(&self.output)?;
            config.devices = self.devices.clone();
            config.nodes = self.nodes()?;
            Some(config)
        } else if run::has_checkpoint(&self.output) {
            bail!(
                "{} already holds a run: pass --resume to continue it, or choose another --output",
                self.output.display()
            );
        } else {
            None
        };
        if let (Start::Resume(checkpoint), Some(config)) = (&start, &saved)
            && checkpoint.fresh_moments()
        {
            eprintln!(
                "resuming at step {}{}",
                checkpoint.state.step,
                crate::finetune::fresh_moments_note(true, config.warmup)
            );
        }
        let (spec, limit, holdout, seed, window) = match &saved {
            Some(c) => (
                c.data.parse()?,
                c.limit,
                c.holdout,
                c.seed,
                c.shuffle_window,
            ),
            None => (
                self.data.clone(),
                self.limit,
                self.holdout,
                self.seed,
                self.shuffle_window,
            ),
        };
        // Shards stream through training; every other dataset is read whole and tokenized first.
        let (mut train_ids, mut stream) = (Vec::new(), None);
        match &spec {
            DataSpec::Shards { dir } => {
                stream = Some(ShardStream::open(
                    dir,
                    tokenizer.clone(),
                    seed,
                    window,
                    limit,
                    holdout,
                )?)
            }
            _ => train_ids = tokenize_all(&spec, &tokenizer, limit)?,
        }
        let config = match saved {
            Some(config) => config,
            None => {
                let images = match &stream {
                    Some((stream, _)) => stream.len(),
                    None => train_ids.len().saturating_sub(holdout),
                };
                if let Some(dir) = &self.model {
                    history::save_parent(&self.output, dir)?;
                }
                self.config(images)?
            }
        };
        let (data, val_ids) = match stream {
            Some((stream, held)) => {
                let val_ids = match &config.val {
                    Some(spec) => {
                        tokenize_all(&spec.parse()?, &tokenizer, Some(config.eval_images))?
                    }
                    None => held,
                };
                (TrainData::Stream(stream), val_ids)
            }
            None => {
                let val_ids = match &config.val {
                    Some(spec) => {
                        tokenize_all(&spec.parse()?, &tokenizer, Some(config.eval_images))?
                    }
                    None => split_holdout(&mut train_ids, config.holdout)?,
                };
                (TrainData::from(&train_ids), val_ids)
            }
        };
        let replicas = match (&config.nodes, config.devices.len()) {
            (Some(nodes), _) => format!(
                ", split across {} nodes (this is node {})",
                nodes.count, nodes.rank
            ),
            (None, 0 | 1) => String::new(),
            (None, n) => format!(", split across {n} replicas"),
        };
        let streamed = match &data {
            TrainData::Stream(_) => {
                format!(" (streamed, shuffled {} at a time)", config.shuffle_window)
            }
            TrainData::InMemory { .. } => String::new(),
        };
        eprintln!(
            "training {:.2}M parameters, {}, on {} images of {}{streamed} for {} steps of {}{replicas} (lr {}, {} warmup)",
            start.stored().config.num_params() as f64 / 1e6,
            start.stored().config.objective.describe(),
            data.len(),
            config.data,
            config.steps,
            config.batch,
            config.lr,
            config.warmup
        );
        let bar = ProgressBar::new(config.steps as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:30} {pos}/{len} {msg} [{elapsed_precise} < {eta_precise}]",
            )
            .expect("valid template"),
        );
        let mut val_note = String::new();
        let (_, state) = train::train(&self.output, &config, start, data, &val_ids, |event| {
            match event {
                Event::Step {
                    step,
                    loss,
                    tokens_per_second,
                    lr,
                    ..
                } => {
                    bar.set_position(step as u64);
                    bar.set_message(format!(
                        "loss {loss:.4} ({:.3} bits/token) lr {lr:.2e} {tokens_per_second:.0} tok/s{val_note}",
                        loss / std::f64::consts::LN_2
                    ));
                }
                Event::Validation { step, score, best } => {
                    val_note = format!(" | val {score:.4} bits/token");
                    let mark = if best { " (best)" } else { "" };
                    log_line(
                        &bar,
                        &format!("step {step}: validation {score:.4} bits/token{mark}"),
                    );
                }
                Event::Checkpoint { .. } => {}
            }
            ControlFlow::Continue(())
        })?;
        bar.finish();
        eprintln!(
            "done: {} steps in {:.0}s; last loss {:.4}{}; {} {}{}",
            state.step,
            state.seconds,
            state.last_loss.unwrap_or(f64::NAN),
            state
                .last_val_bits
                .map_or(String::new(), |v| format!(", validation {v:.4} bits/token")),
            match &config.nodes {
                Some(nodes) if nodes.rank != 0 => "node 0 wrote the checkpoint in",
                _ => "checkpoint in",
            },
            run::checkpoint_dir(&self.output).display(),
            heap::peak_resident_bytes().map_or(String::new(), |b| format!(
                "; peak memory {:.0} MB",
                b as f64 / 1e6
            )),
        );
        Ok(())
    }
}

impl TrainArgs {
    /// The objective asked for, if any; --mask-prob only with BERT's.
    fn objective(&self) -> anyhow::Result<Option<Objective>> {
        Ok(match self.objective {
            Some(ObjectiveArg::Bert) => Some(Objective::bert(
                self.mask_prob.unwrap_or(objective::DEFAULT_MASK_PROB),
            )?),
            _ if self.mask_prob.is_some() => bail!("--mask-prob is for --objective bert"),
            Some(ObjectiveArg::Autoregressive) => Some(Objective::Autoregressive),
            None => None,
        })
    }

    /// Where this process stands in a multi-node run, if it is one.
    fn nodes(&self) -> anyhow::Result<Option<Nodes>> {
        let (Some(count), Some(rank)) = (self.nodes, self.node_rank) else {
            return Ok(None);
        };
        let nodes = Nodes {
            count,
            rank,
            coordinator: self.coordinator.clone(),
            address: String::new(),
            timeout: std::time::Duration::from_secs(self.node_timeout.max(1)),
        };
        let address = match &self.node_address {
            Some(address) => address.clone(),
            None => format!(
                "127.0.0.1:{}",
                u32::from(nodes.coordinator_port()?) + 1 + rank
            ),
        };
        Ok(Some(Nodes { address, ..nodes }))
    }

    fn config(&self, images: usize) -> anyhow::Result<TrainConfig> {
        let steps = match (self.steps, self.epochs) {
            (Some(steps), _) => steps,
            (None, Some(epochs)) => ((images as f64 * epochs) / self.batch as f64).ceil() as usize,
            (None, None) => images.div_ceil(self.batch),
        };
        let config = TrainConfig {
            data: self.data.to_string(),
            limit: self.limit,
            holdout: self.holdout,
            val: self.val.as_ref().map(ToString::to_string),
            batch: self.batch,
            steps,
            lr: self.lr,
            warmup: self.warmup.unwrap_or(steps / 20),
            grad_clip: self.grad_clip,
            flip: self.flip,
            crop: self.crop,
            shuffle_window: self.shuffle_window,
            seed: self.seed,
            log_every: self.log_every,
            eval_every: self.eval_every,
            eval_images: self.eval_images,
            checkpoint_every: self.checkpoint_every,
            keep_every: self.keep_every,
            precision: self.precision,
            classification_only: false,
            init: self.model.as_ref().map(|dir| dir.display().to_string()),
            devices: self.devices.clone(),
            nodes: self.nodes()?,
        };
        config.validate()?;
        Ok(config)
    }
}

/// Takes the last `holdout` images off `train` and returns them (the run's validation images).
fn split_holdout(train: &mut Vec<Vec<u16>>, holdout: usize) -> anyhow::Result<Vec<Vec<u16>>> {
    if holdout >= train.len() {
        bail!(
            "--holdout {holdout} leaves no training images (the data has {})",
            train.len()
        );
    }
    Ok(train.split_off(train.len() - holdout))
}

impl BackendJob for ExportArgs {
    type Output = ();

    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<()> {
        let config = run::read_config(&self.run)?;
        let mut training = history::run_record(&self.run, &config)?;
        let mut stored = store::load_dir::<B>(&run::checkpoint_dir(&self.run), &device)?;
        let name = self.name.clone().unwrap_or_else(|| {
            self.output
                .file_name()
                .map_or("igpt".into(), |n| n.to_string_lossy().into_owned())
        });
        let precision = if self.f16 {
            WeightPrecision::F16
        } else {
            WeightPrecision::F32
        };
        // Write the weights first, then measure what was written (f16 rounding included).
        stored.card.name = Some(name);
        stored.card.dataset = Some(config.data.clone());
        stored.save_dir(&self.output, precision)?;
        let written = store::load_dir::<B>(&self.output, &device)?;
        let test: DataSpec = match (&self.test, &config.val) {
            (Some(spec), _) => spec.clone(),
            (None, Some(val)) => val.parse()?,
            (None, None) => bail!(
                "the run validated on held-out training images (or on none): give --test SPEC"
            ),
        };
        let ids = tokenize_all(&test, &written.tokenizer(), self.limit)?;
        let bar = progress(ids.len(), "measuring");
        let nll = sequence_nll(&written.model, &ids, 32, |n| bar.inc(n as u64))?;
        bar.finish_and_clear();
        let card = &mut stored.card;
        card.metrics
            .insert("test_bits_per_token".into(), nll.bits_per_token);
        card.metrics.insert("test_nll_nats".into(), nll.nll_nats);
        card.metrics.insert("test_images".into(), nll.count as f64);
        card.test_data = Some(test.to_string());
        // The bars this model had to clear, on the same test images.
        let train_data: DataSpec = config.data.parse()?;
        let tokenizer = written.tokenizer();
        let mut train_ids = tokenize_all(&train_data, &tokenizer, config.limit)?;
        train_ids.truncate(train_ids.len().saturating_sub(config.holdout));
        let b = igpt::analysis::baselines::baselines(
            &train_ids,
            &ids,
            tokenizer.width,
            tokenizer.palette.len(),
        )?;
        card.baselines = Some(baselines::card_entry(b, &train_data, &test, ids.len()));
        training.parameters = Some(stored.config.num_params());
        training.weights = Some(precision.name().into());
        card.training = Some(training);
        card.note.clone_from(&self.note);
        stored.card.save(&self.output)?;
        println!(
            "wrote {}: {:.4} bits/token on {} images of {test}",
            self.output.display(),
            nll.bits_per_token,
            nll.count
        );
        Ok(())
    }
}
