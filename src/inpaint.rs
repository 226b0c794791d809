//! Filling any region of an image with a BERT model (issue 30, item 4).
//!
//! The region starts hidden. Each pass runs the model once over the whole image with the unfilled
//! pixels hidden, picks one unfilled pixel in every image, draws its colour from the model's
//! distribution there, and shows it to the next pass, so the fill ends after exactly one pass per
//! hidden pixel (Gibbs sampling would need many sweeps over the region to mix, each as many passes).
//!
//! Which pixel ([`FillOrder`]): by default one at random (seeded), which makes the fill ancestral
//! sampling in a random order: each colour drawn given everything drawn before, so the fill follows
//! the model's joint distribution as far as its conditionals agree with one. Filling the pixel the
//! model is surest of first looks natural but is biased: on Fashion-MNIST the surest colour is
//! almost always the black background, a black pixel makes its neighbours surer of black, and the
//! hole fills with black from its edges (seen on the shipped model: `--order confident` cuts a boot
//! in two). The colour is drawn as sampling draws it ([`SamplingConfig`], with noise keyed by seed,
//! image and pixel), so a seed gives the same fill on every backend.

use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use rand::{RngExt, SeedableRng, rngs::ChaCha8Rng};

use crate::error::{Error, Result};
use crate::model::objective::mask_tensor;
use crate::model::{ForwardOptions, ImageGpt, Workload};
use crate::pixels::tokens::check_ids;
use crate::sample::{SamplingConfig, SamplingNoise};

/// Which unfilled pixel each pass fills.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FillOrder {
    /// One at random, seeded by (seed, image, pass): ancestral sampling in a random order.
    #[default]
    Random,
    /// The one whose most likely colour is most probable.
    Confident,
}

/// Fills in progress: `count` copies of one image, each filling the same hole its own way.
pub struct Inpainting {
    images: Vec<Vec<u16>>,
    /// Per image, the pixels still to fill.
    unfilled: Vec<Vec<bool>>,
    /// Per image, the pixels in the order they were filled.
    order: Vec<Vec<usize>>,
    config: SamplingConfig,
    noise: SamplingNoise,
    seed: u64,
    fill_order: FillOrder,
    hole: usize,
}

impl Inpainting {
    /// Starts `count` fills of the pixels of `image` where `hole` is true. `image` holds palette ids
    /// (what it has inside the hole is never read: hidden pixels' embeddings are zeroed).
    pub fn new<B: Backend>(
        model: &ImageGpt<B>,
        image: &[u16],
        hole: &[bool],
        count: usize,
        config: SamplingConfig,
        seed: u64,
    ) -> Result<Self> {
        if model.objective().is_causal() {
            return Err(Error::invalid(
                "inpainting needs a BERT model (trained with --objective bert): an autoregressive \
                 model only continues an image from the top (igpt complete)",
            ));
        }
        let n = model.n_positions();
        if image.len() != n || hole.len() != n {
            return Err(Error::invalid(format!(
                "the model reads {n} pixels; the image has {} and the hole {}",
                image.len(),
                hole.len()
            )));
        }
        check_ids("the image", image, model.n_colors())?;
        config.validate(model.n_colors())?;
        if count == 0 {
            return Err(Error::invalid("nothing to fill: 0 images"));
        }
        model.check_batch(count, Workload::Sampling)?;
        let size = hole.iter().filter(|&&h| h).count();
        if size == 0 {
            return Err(Error::invalid("the hole is empty: nothing to fill"));
        }
        Ok(Self {
            images: vec![image.to_vec(); count],
            unfilled: vec![hole.to_vec(); count],
            order: vec![Vec::with_capacity(size); count],
            config,
            noise: SamplingNoise::new(seed),
            seed,
            fill_order: FillOrder::default(),
            hole: size,
        })
    }

    /// The same fill, picking pixels in `order`.
    pub fn with_order(mut self, order: FillOrder) -> Self {
        self.fill_order = order;
        self
    }

    /// Pixels each image's hole holds.
    pub fn hole_size(&self) -> usize {
        self.hole
    }

    /// Pixels filled so far, per image.
    pub fn filled(&self) -> usize {
        self.order[0].len()
    }

    pub fn is_done(&self) -> bool {
        self.filled() == self.hole
    }

    /// The images as they stand: filled pixels drawn, unfilled ones as given.
    pub fn images(&self) -> &[Vec<u16>] {
        &self.images
    }

    /// Per image, its pixels in the order they were filled.
    pub fn order(&self) -> &[Vec<usize>] {
        &self.order
    }

    /// Per image, the pixels still to fill.
    pub fn unfilled(&self) -> &[Vec<bool>] {
        &self.unfilled
    }

    /// One pass: fills one more pixel of every image ([`propose`](Self::propose), then
    /// [`draw`](Self::draw), then [`fill`](Self::fill), reading back synchronously; the browser
    /// reads back without blocking between them).
    pub fn step<B: Backend>(&mut self, model: &ImageGpt<B>) -> Result<()> {
        if self.is_done() {
            return Ok(());
        }
        let proposal = self.propose(model);
        let picks = match &proposal.picks {
            Picks::Chosen(picks) => picks.clone(),
            Picks::OnDevice(picks) => read_ids(picks.clone().into_data())?,
        };
        let colours = read_ids(self.draw(&proposal, &picks).into_data())?;
        self.fill(&picks, &colours)
    }

    /// The pass's forward, on the device: every pixel's logits with the unfilled ones hidden, and
    /// in each image the unfilled pixel to fill (by the [`FillOrder`]: a random order's are chosen
    /// on the host, so only the colours need reading back).
    pub fn propose<B: Backend>(&self, model: &ImageGpt<B>) -> Proposal<B> {
        let device = model.device();
        let (b, t) = (self.images.len(), model.n_positions());
        let masked = mask_tensor::<B>(&self.unfilled, &device);
        let (inputs, _) = model.inputs_and_targets(self.images.iter().map(Vec::as_slice));
        let options = ForwardOptions {
            masked: Some(masked.clone()),
            ..Default::default()
        };
        let logits = model.logits(model.forward_with(inputs, options).normed); // [b, t, k]
        let picks = match self.fill_order {
            FillOrder::Random => {
                Picks::Chosen((0..b).map(|image| self.random_pick(image)).collect())
            }
            // Each unfilled pixel's top-colour probability; filled ones can never be picked.
            FillOrder::Confident => Picks::OnDevice(
                softmax(logits.clone(), 2)
                    .max_dim(2)
                    .reshape([b, t])
                    .mask_fill(masked.bool_not(), -1.0)
                    .argmax(1),
            ),
        };
        Proposal { picks, logits }
    }

    /// Image `image`'s next pixel in a random order: one of its unfilled pixels, uniformly, keyed by
    /// (seed, image, pass) so a seed fills the same on every backend and batch size.
    fn random_pick(&self, image: usize) -> usize {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(b"inpaint\0");
        key[8..16].copy_from_slice(&self.seed.to_le_bytes());
        key[16..24].copy_from_slice(&(image as u64).to_le_bytes());
        key[24..32].copy_from_slice(&(self.order[image].len() as u64).to_le_bytes());
        let left = self.hole - self.order[image].len();
        let nth = ChaCha8Rng::from_seed(key).random_range(0..left);
        let mut unfilled = self.unfilled[image].iter().enumerate().filter(|(_, u)| **u);
        unfilled.nth(nth).map_or(0, |(pixel, _)| pixel)
    }

    /// The colours of the picked pixels (`picks`, one per image, read back from the proposal), drawn
    /// on the device: `[images, 1]`.
    pub fn draw<B: Backend>(&self, proposal: &Proposal<B>, picks: &[usize]) -> Tensor<B, 2, Int> {
        let k = proposal.logits.dims()[2];
        let colours: Vec<Tensor<B, 2, Int>> = picks
            .iter()
            .enumerate()
            .map(|(image, &pixel)| {
                let row = proposal
                    .logits
                    .clone()
                    .slice([image..image + 1, pixel..pixel + 1, 0..k])
                    .reshape([1, k]);
                self.config.draw(row, &self.noise, image..image + 1, pixel)
            })
            .collect();
        Tensor::cat(colours, 0)
    }

    /// Fills each image's picked pixel with its drawn colour (both read back, one per image).
    pub fn fill(&mut self, picks: &[usize], colours: &[usize]) -> Result<()> {
        let images = self.images.len();
        if picks.len() != images || colours.len() != images {
            return Err(Error::invalid(format!(
                "{} picks and {} colours for {images} images",
                picks.len(),
                colours.len()
            )));
        }
        for (image, (&pixel, &colour)) in picks.iter().zip(colours).enumerate() {
            if !self.unfilled[image].get(pixel).copied().unwrap_or(false) {
                return Err(Error::invalid(format!(
                    "pixel {pixel} of image {image} is not waiting to be filled (the model's scores are not finite?)"
                )));
            }
            self.images[image][pixel] = colour as u16;
            self.unfilled[image][pixel] = false;
            self.order[image].push(pixel);
        }
        Ok(())
    }
}

/// Each image's pixel to fill in one pass.
pub enum Picks<B: Backend> {
    /// Chosen on the host (a random order): nothing to read back.
    Chosen(Vec<usize>),
    /// `[images, 1]`, chosen on the device from the pass's logits (the most confident pixel).
    OnDevice(Tensor<B, 2, Int>),
}

/// One pass's work on the device, before anything is read back.
pub struct Proposal<B: Backend> {
    pub picks: Picks<B>,
    /// `[images, pixels, K]`: the pass's logits, which the colours are drawn from.
    logits: Tensor<B, 3>,
}

/// Ids read back from the device (picks or colours).
pub fn read_ids(data: TensorData) -> Result<Vec<usize>> {
    data.convert::<i64>()
        .into_vec::<i64>()
        .map(|v| v.into_iter().map(|i| i as usize).collect())
        .map_err(|e| Error::invalid(format!("reading picks back: {e:?}")))
}

/// Fills the hole of `image` `count` ways to the end, in `order`; `on_pass` hears each pass's state.
pub fn inpaint<B: Backend>(
    model: &ImageGpt<B>,
    image: &[u16],
    hole: &[bool],
    count: usize,
    (config, seed): (SamplingConfig, u64),
    order: FillOrder,
    mut on_pass: impl FnMut(&Inpainting),
) -> Result<Vec<Vec<u16>>> {
    let mut fill = Inpainting::new(model, image, hole, count, config, seed)?.with_order(order);
    while !fill.is_done() {
        fill.step(model)?;
        on_pass(&fill);
    }
    Ok(fill.images)
}
