//! The browser boundary: one exported class, `ImageGpt`, driving the shared model from JavaScript.
//! WebGPU when the page has it (burn-wgpu), else the Flex CPU backend in wasm. Generation is exposed a
//! chunk of steps at a time, so the page paints rows as they arrive and can stop at any point.

use burn::backend::wgpu::graphics::AutoGraphicsApi;
use burn::backend::wgpu::{WgpuDevice, init_setup_async};
use burn::backend::{Flex, Wgpu};
use burn::tensor::backend::Backend;
use wasm_bindgen::prelude::*;

use crate::Tokenizer;
use crate::analysis::explain::{self, Explanation};
use crate::inpaint::{Inpainting, Picks, read_ids};
use crate::inspect::ablation::{self, Ablated, AblationReport};
use crate::inspect::ablation_means::AblationMeans;
use crate::inspect::intervention;
use crate::inspect::masked::{MaskedSurprise, masked_passes};
use crate::inspect::patching::{self, PatchReport, Region};
use crate::inspect::{self, Inspected, TRACED_TENSORS, Traced, floats};
use crate::model::ImageGpt as Model;
use crate::model::patch::Patch;
use crate::pixels::raster::Raster;
use crate::pixels::tokens::{check_image, inputs_and_targets};
use crate::sample::{Decoding, Generation, SamplingConfig};
use crate::store::ModelFiles;

/// A model on one backend with the generation in progress, if any.
struct Engine<B: Backend> {
    model: Model<B>,
    /// A copy with one part silenced, which generation uses while it is set (the inspector's
    /// "resample under the ablation"); the inspector itself always reads `model`.
    ablated: Option<Model<B>>,
    /// Another image's states patched into every generation while it is set (the inspector's
    /// "resample under the patch").
    patch: Option<Patch<B>>,
    generation: Option<Generation<B>>,
}

impl<B: Backend> Engine<B> {
    fn start(
        &mut self,
        prefixes: Vec<Vec<u16>>,
        config: SamplingConfig,
        seed: u64,
    ) -> Result<(), JsError> {
        self.generation = Some(
            Generation::new(
                self.ablated.as_ref().unwrap_or(&self.model),
                prefixes,
                config,
                Decoding::Cached,
                seed,
            )?
            .with_patch(self.patch.clone()),
        );
        Ok(())
    }

    /// Runs up to `steps` steps, then reads the new tokens back (the only host round trip).
    async fn advance(&mut self, steps: usize) -> Result<(), JsError> {
        let generation = self
            .generation
            .as_mut()
            .ok_or_else(|| JsError::new("call start() before advance()"))?;
        let model = self.ablated.as_ref().unwrap_or(&self.model);
        for _ in 0..steps {
            generation.step(model);
        }
        if let Some(tokens) = generation.take_pending() {
            let data = tokens
                .into_data_async()
                .await
                .map_err(|e| JsError::new(&format!("reading tokens back failed: {e:?}")))?;
            generation.absorb(data)?;
        }
        Ok(())
    }

    /// The inspector's pass over one image, read back without blocking; with a fine-tuned model,
    /// its label from the same pass.
    async fn inspect(
        &self,
        ids: &[u16],
        width: usize,
    ) -> Result<(Inspected, Option<Explanation>), JsError> {
        let traced = Inspected::trace(&self.model, ids, width)?;
        let label = match traced.labels {
            Some(scores) => {
                let data = scores.into_data_async().await.map_err(|e| {
                    JsError::new(&format!("reading the classification back failed: {e:?}"))
                })?;
                Some(Traced::label(&self.model, &floats(data)?)?)
            }
            None => None,
        };
        let mut numbers = Vec::with_capacity(TRACED_TENSORS);
        for tensor in traced.tensors {
            let data = tensor
                .into_data_async()
                .await
                .map_err(|e| JsError::new(&format!("reading the inspection back failed: {e:?}")))?;
            numbers.push(floats(data)?);
        }
        let numbers: [Vec<f32>; TRACED_TENSORS] = numbers.try_into().expect("one list per tensor");
        let inspected = Inspected::from_numbers(
            &self.model,
            ids,
            width,
            traced.n_head,
            traced.scale,
            numbers,
        )?;
        Ok((inspected, label))
    }

    /// A BERT model's inspection: each pixel's bits when hidden, read back without blocking.
    async fn inspect_masked(&self, ids: &[u16], width: usize) -> Result<MaskedSurprise, JsError> {
        let passes = masked_passes(&self.model, ids, width, 0)?;
        let data = passes
            .log_probs
            .into_data_async()
            .await
            .map_err(|e| JsError::new(&format!("reading the inspection back failed: {e:?}")))?;
        Ok(MaskedSurprise::new(&passes.hidden, &floats(data)?))
    }

    /// A fine-tuned model's label for one image and each pixel's share of it, read back without
    /// blocking.
    async fn explain(&self, ids: &[u16], width: usize) -> Result<Explanation, JsError> {
        let shares = explain::trace_explanation(&self.model, ids, width)?
            .into_data_async()
            .await
            .map_err(|e| JsError::new(&format!("reading the classification back failed: {e:?}")))?;
        let causal = self.model.objective().is_causal();
        Ok(Explanation::from_numbers(
            &floats(shares)?,
            self.model.n_labels(),
            causal,
        )?)
    }

    /// Every pixel's logits for one image, teacher-forced (`[pixels × K]`), read back without blocking.
    async fn logits(&self, ids: &[u16], width: usize) -> Result<Vec<f32>, JsError> {
        let model = &self.model;
        check_image(ids, width, model.n_positions(), model.n_colors())?;
        let (inputs, _) =
            inputs_and_targets::<B>(std::iter::once(ids), model.n_colors(), &model.device());
        let data = model
            .forward(inputs)
            .into_data_async()
            .await
            .map_err(|e| JsError::new(&format!("reading the logits back failed: {e:?}")))?;
        Ok(floats(data)?)
    }

    /// What silencing `part` (by its mean write when `means` are given, else zero) costs the
    /// inspected image, read back without blocking.
    async fn ablation(
        &self,
        inspected: &Inspected,
        part: Ablated,
        means: Option<&AblationMeans>,
    ) -> Result<AblationReport, JsError> {
        let silenced = ablation::silenced(&self.model, part, means)?;
        let data = intervention::bits_per_pixel(&silenced, &inspected.ids, None)
            .into_data_async()
            .await
            .map_err(|e| JsError::new(&format!("reading the ablation back failed: {e:?}")))?;
        Ok(AblationReport::new(
            part,
            means.is_some(),
            floats(data)?,
            &inspected.bits_per_pixel(),
        ))
    }

    /// What patching `source`'s states over `region` at `layer` does to the inspected image, read
    /// back without blocking.
    async fn patching(
        &self,
        inspected: &Inspected,
        source: &[u16],
        layer: usize,
        region: Region,
    ) -> Result<PatchReport, JsError> {
        let patch = patching::patch_from(&self.model, source, layer, region, inspected.width)?;
        let data = intervention::bits_per_pixel(&self.model, &inspected.ids, Some(&patch))
            .into_data_async()
            .await
            .map_err(|e| JsError::new(&format!("reading the patched run back failed: {e:?}")))?;
        Ok(PatchReport::new(
            layer,
            region,
            floats(data)?,
            &inspected.bits_per_pixel(),
            inspected.width,
        ))
    }

    /// Up to `passes` passes of `fill`, each reading its colours back without blocking (and first
    /// its picks, where the device chose them).
    async fn inpaint(&self, fill: &mut Inpainting, passes: usize) -> Result<(), JsError> {
        let read = |e| JsError::new(&format!("reading the fill back failed: {e:?}"));
        for _ in 0..passes {
            if fill.is_done() {
                break;
            }
            let proposal = fill.propose(&self.model);
            let picks = match &proposal.picks {
                Picks::Chosen(picks) => picks.clone(),
                Picks::OnDevice(picks) => {
                    read_ids(picks.clone().into_data_async().await.map_err(read)?)?
                }
            };
            let colours = fill.draw(&proposal, &picks).into_data_async().await;
            fill.fill(&picks, &read_ids(colours.map_err(read)?)?)?;
        }
        Ok(())
    }

    fn is_done(&self) -> bool {
        self.generation.as_ref().is_none_or(Generation::is_done)
    }

    fn sequences(&self) -> &[Vec<u16>] {
        self.generation.as_ref().map_or(&[], |g| g.sequences())
    }
}

/// (Boxed: an engine is kilobytes, and the two differ in size.)
enum Backends {
    Gpu(Box<Engine<Wgpu>>),
    Cpu(Box<Engine<Flex>>),
}

/// Image GPT in the page: load a model, sample or complete images step by step, paint them.
#[wasm_bindgen]
pub struct ImageGpt {
    engine: Backends,
    tokenizer: Tokenizer,
    card: String,
    /// RGBA of every palette colour, so painting is a table lookup per pixel.
    colours: Vec<[u8; 4]>,
    /// The parts' mean writes for mean ablation, when the model ships them (`set_means`).
    means: Option<AblationMeans>,
    /// The fill in progress of a BERT model (`start_inpaint`).
    inpainting: Option<Inpainting>,
    /// A fine-tuned model's class names (`config.json`'s `id2label`); empty without a head.
    labels: Vec<String>,
}

#[wasm_bindgen]
impl ImageGpt {
    /// Builds the model from a model directory's files. With `webgpu`, initialises WebGPU first
    /// (the page checks `navigator.gpu.requestAdapter()` before asking); else runs on the CPU.
    pub async fn load(
        weights: Vec<u8>,
        config: String,
        preprocessor: String,
        card: Option<String>,
        webgpu: bool,
    ) -> Result<ImageGpt, JsError> {
        console_error_panic_hook::set_once();
        let files = ModelFiles {
            weights,
            config,
            preprocessor,
            card,
        };
        let (engine, stored_card, tokenizer, labels) = if webgpu {
            let device = WgpuDevice::default();
            init_setup_async::<AutoGraphicsApi>(&device, Default::default()).await;
            let stored = files.load::<Wgpu>(&device)?;
            let (card, tokenizer) = (stored.card.clone(), stored.tokenizer());
            let engine = Engine {
                model: stored.model,
                ablated: None,
                patch: None,
                generation: None,
            };
            (
                Backends::Gpu(Box::new(engine)),
                card,
                tokenizer,
                stored.labels,
            )
        } else {
            let stored = files.load::<Flex>(&Default::default())?;
            let (card, tokenizer) = (stored.card.clone(), stored.tokenizer());
            let engine = Engine {
                model: stored.model,
                ablated: None,
                patch: None,
                generation: None,
            };
            (
                Backends::Cpu(Box::new(engine)),
                card,
                tokenizer,
                stored.labels,
            )
        };
        let k = tokenizer.palette.len();
        let all: Vec<u16> = (0..k as u16).collect();
        let strip = tokenizer.palette.detokenize(&all, k, 1)?.with_channels(3);
        let colours = strip
            .pixels
            .chunks_exact(3)
            .map(|p| [p[0], p[1], p[2], 255])
            .collect();
        Ok(ImageGpt {
            engine,
            tokenizer,
            card: serde_json::to_string(&stored_card).unwrap_or_default(),
            colours,
            means: None,
            inpainting: None,
            labels,
        })
    }

    /// Gives the model its `ablation-means.json` (text), checked against its shape, so ablations
    /// can replace a part by its mean write instead of zero.
    pub fn set_means(&mut self, text: String) -> Result<(), JsError> {
        let means = AblationMeans::parse(&text)?;
        match &self.engine {
            Backends::Gpu(e) => means.check(&e.model)?,
            Backends::Cpu(e) => means.check(&e.model)?,
        }
        self.means = Some(means);
        Ok(())
    }

    /// Whether mean ablation is possible (the model's means were given).
    pub fn has_means(&self) -> bool {
        self.means.is_some()
    }

    /// `"webgpu"` or `"cpu"`.
    pub fn backend(&self) -> String {
        match self.engine {
            Backends::Gpu(_) => "webgpu".into(),
            Backends::Cpu(_) => "cpu".into(),
        }
    }

    /// The model card as JSON.
    pub fn card(&self) -> String {
        self.card.clone()
    }

    pub fn width(&self) -> usize {
        self.tokenizer.width
    }

    pub fn height(&self) -> usize {
        self.tokenizer.height
    }

    /// Starts `count` images. `prefix` (token ids, e.g. an image's top rows) is continued by each;
    /// empty for unconditional samples. `top_k`/`top_p` of 0 mean off; `temperature` 0 is greedy.
    pub fn start(
        &mut self,
        count: usize,
        prefix: Vec<u16>,
        temperature: f32,
        top_k: usize,
        top_p: f32,
        seed: u32,
    ) -> Result<(), JsError> {
        self.start_each(prefix.repeat(count), count, temperature, top_k, top_p, seed)
    }

    /// Starts `count` images, each continuing its own prefix: `prefixes` holds `count` prefixes of one
    /// length, one after another (as `tokens()` returns them, so a generation can go on elsewhere, e.g.
    /// on the CPU after the GPU was lost).
    pub fn start_each(
        &mut self,
        prefixes: Vec<u16>,
        count: usize,
        temperature: f32,
        top_k: usize,
        top_p: f32,
        seed: u32,
    ) -> Result<(), JsError> {
        if count == 0 || !prefixes.len().is_multiple_of(count) {
            return Err(JsError::new(&format!(
                "{} prefix tokens do not split into {count} prefixes of one length",
                prefixes.len()
            )));
        }
        let config = SamplingConfig::zero_as_off(temperature, top_k, top_p);
        let length = prefixes.len() / count;
        let prefixes: Vec<Vec<u16>> = (0..count)
            .map(|i| prefixes[i * length..(i + 1) * length].to_vec())
            .collect();
        match &mut self.engine {
            Backends::Gpu(e) => e.start(prefixes, config, seed as u64),
            Backends::Cpu(e) => e.start(prefixes, config, seed as u64),
        }
    }

    /// Draws up to `steps` more tokens per image; returns how many tokens each image has now.
    pub async fn advance(&mut self, steps: usize) -> Result<usize, JsError> {
        match &mut self.engine {
            Backends::Gpu(e) => e.advance(steps).await?,
            Backends::Cpu(e) => e.advance(steps).await?,
        }
        Ok(self.sequences().first().map_or(0, Vec::len))
    }

    /// Every image's tokens so far, concatenated (`count` runs of equal length).
    pub fn tokens(&self) -> Vec<u16> {
        self.sequences().concat()
    }

    /// RGBA pixels of rows `first..last` of every image in the generation, one image after another:
    /// what a page paints as rows arrive, without handing the token history back and forth. Pixels
    /// not drawn yet are transparent.
    pub fn rows_rgba(&self, first: usize, last: usize) -> Result<Vec<u8>, JsError> {
        let width = self.tokenizer.width;
        let last = last.min(self.tokenizer.height);
        let first = first.min(last);
        let mut rgba = Vec::with_capacity(self.sequences().len() * (last - first) * width * 4);
        for sequence in self.sequences() {
            let mut rows = vec![0u8; (last - first) * width * 4];
            let drawn = sequence.get(first * width..).unwrap_or(&[]);
            for (px, &id) in rows.chunks_exact_mut(4).zip(drawn) {
                px.copy_from_slice(self.colour(id)?);
            }
            rgba.extend_from_slice(&rows);
        }
        Ok(rgba)
    }

    /// Samples `count` whole images in one call: every image's tokens, concatenated.
    pub async fn sample(
        &mut self,
        count: usize,
        temperature: f32,
        top_k: usize,
        top_p: f32,
        seed: u32,
    ) -> Result<Vec<u16>, JsError> {
        self.complete(Vec::new(), count, temperature, top_k, top_p, seed)
            .await
    }

    /// Completes `prefix` (token ids of an image's first rows) `count` ways in one call.
    pub async fn complete(
        &mut self,
        prefix: Vec<u16>,
        count: usize,
        temperature: f32,
        top_k: usize,
        top_p: f32,
        seed: u32,
    ) -> Result<Vec<u16>, JsError> {
        self.start(count, prefix, temperature, top_k, top_p, seed)?;
        let total = self.tokenizer.width * self.tokenizer.height;
        // One readback at the end: the whole image is drawn on the device.
        self.advance(total).await?;
        Ok(self.tokens())
    }

    pub fn done(&self) -> bool {
        match &self.engine {
            Backends::Gpu(e) => e.is_done(),
            Backends::Cpu(e) => e.is_done(),
        }
    }

    /// RGBA pixels (for `ImageData`) of a possibly partial token sequence; missing pixels are
    /// transparent.
    pub fn render(&self, ids: Vec<u16>) -> Result<Vec<u8>, JsError> {
        let total = self.tokenizer.width * self.tokenizer.height;
        let mut rgba = vec![0u8; total * 4];
        for (px, &id) in rgba.chunks_exact_mut(4).zip(ids.iter().take(total)) {
            px.copy_from_slice(self.colour(id)?);
        }
        Ok(rgba)
    }

    /// Runs one image (its token ids, as `tokenize` gives them) through the model for the inspector.
    /// Stop any generation first: the model serves one call at a time.
    pub async fn inspect(&self, ids: Vec<u16>) -> Result<Inspection, JsError> {
        let width = self.tokenizer.width;
        let (inner, label) = match &self.engine {
            Backends::Gpu(e) => e.inspect(&ids, width).await?,
            Backends::Cpu(e) => e.inspect(&ids, width).await?,
        };
        let label = label.map(|l| self.label_json(&l)).transpose()?;
        Ok(Inspection { inner, label })
    }

    /// A BERT model's inspector: each pixel's surprise in bits when it is hidden, the same JSON as
    /// `igpt inspect --json` gives for a BERT model (`bits_per_pixel`, `mean_bits`, `passes`).
    pub async fn inspect_masked(&self, ids: Vec<u16>) -> Result<String, JsError> {
        let width = self.tokenizer.width;
        let surprise = match &self.engine {
            Backends::Gpu(e) => e.inspect_masked(&ids, width).await?,
            Backends::Cpu(e) => e.inspect_masked(&ids, width).await?,
        };
        serde_json::to_string(&surprise).map_err(|e| JsError::new(&e.to_string()))
    }

    /// A fine-tuned model's class names; empty for a model without a classification head.
    pub fn labels(&self) -> Vec<String> {
        self.labels.clone()
    }

    /// A fine-tuned model's label for one image (its token ids, as `tokenize` gives them): JSON
    /// `{"labels", "logits", "probabilities", "class", "pixel_shares", "start_share"}`, where
    /// `pixel_shares` is each pixel's share of the likeliest class's logit above the mean class's
    /// (`igpt::analysis::explain::Explanation`; `igpt classify --json --explain` gives the same).
    pub async fn classify(&self, ids: Vec<u16>) -> Result<String, JsError> {
        let width = self.tokenizer.width;
        let explained = match &self.engine {
            Backends::Gpu(e) => e.explain(&ids, width).await?,
            Backends::Cpu(e) => e.explain(&ids, width).await?,
        };
        self.label_json(&explained)
    }

    /// Every pixel's logits for one image (its token ids, as `tokenize` gives them), teacher-forced:
    /// `pixels × K` numbers, pixel by pixel. The page compares them across backends (CPU match).
    pub async fn logits(&self, ids: Vec<u16>) -> Result<Vec<f32>, JsError> {
        let width = self.tokenizer.width;
        match &self.engine {
            Backends::Gpu(e) => e.logits(&ids, width).await,
            Backends::Cpu(e) => e.logits(&ids, width).await,
        }
    }

    /// What silencing `part` (`head:L.H`, `attention:L` or `mlp:L`) costs the inspected image, its
    /// output zeroed or (`mean`) replaced by its mean write: JSON as `igpt inspect --ablate PART
    /// [--mean] --json` gives under `ablation`.
    pub async fn ablation(
        &self,
        inspection: &Inspection,
        part: String,
        mean: bool,
    ) -> Result<String, JsError> {
        let part: Ablated = part.parse()?;
        let means = means_for(mean, self.means.as_ref())?;
        let report = match &self.engine {
            Backends::Gpu(e) => e.ablation(&inspection.inner, part, means).await?,
            Backends::Cpu(e) => e.ablation(&inspection.inner, part, means).await?,
        };
        serde_json::to_string(&report).map_err(|e| JsError::new(&e.to_string()))
    }

    /// Generation from now on runs with `part` silenced (zeroed, or replaced by its mean write with
    /// `mean`), or intact with none (the inspector's resample under an ablation).
    pub fn set_ablation(&mut self, part: Option<String>, mean: bool) -> Result<(), JsError> {
        let part = part.map(|p| p.parse::<Ablated>()).transpose()?;
        let means = means_for(mean, self.means.as_ref())?;
        match &mut self.engine {
            Backends::Gpu(e) => {
                e.ablated = part
                    .map(|p| ablation::silenced(&e.model, p, means))
                    .transpose()?
            }
            Backends::Cpu(e) => {
                e.ablated = part
                    .map(|p| ablation::silenced(&e.model, p, means))
                    .transpose()?
            }
        }
        Ok(())
    }

    /// What running the inspected image with `source`'s hidden states (token ids, as `tokenize`
    /// gives them) over `region` (`TOP,LEFT,BOTTOM,RIGHT`) at `layer` changes: JSON as `igpt inspect
    /// --patch-from IMAGE --patch-layer LAYER --patch-region REGION --json` gives under `patching`.
    pub async fn patching(
        &self,
        inspection: &Inspection,
        source: Vec<u16>,
        layer: usize,
        region: String,
    ) -> Result<String, JsError> {
        let region: Region = region.parse()?;
        let inspected = &inspection.inner;
        let report = match &self.engine {
            Backends::Gpu(e) => e.patching(inspected, &source, layer, region).await?,
            Backends::Cpu(e) => e.patching(inspected, &source, layer, region).await?,
        };
        serde_json::to_string(&report).map_err(|e| JsError::new(&e.to_string()))
    }

    /// Generation from now on runs with `source`'s states over `region` at `layer` patched in, or
    /// unpatched with no source (the inspector's resample under a patch).
    pub fn set_patch(
        &mut self,
        source: Option<Vec<u16>>,
        layer: usize,
        region: String,
    ) -> Result<(), JsError> {
        let (source, width) = (source.as_deref(), self.tokenizer.width);
        match &mut self.engine {
            Backends::Gpu(e) => e.patch = patch_for(&e.model, source, layer, &region, width)?,
            Backends::Cpu(e) => e.patch = patch_for(&e.model, source, layer, &region, width)?,
        }
        Ok(())
    }

    /// What the model predicts: `autoregressive` (it samples and completes) or `bert` (it fills
    /// hidden pixels: `start_inpaint`).
    pub fn objective(&self) -> String {
        let objective = match &self.engine {
            Backends::Gpu(e) => e.model.objective(),
            Backends::Cpu(e) => e.model.objective(),
        };
        if objective.is_causal() {
            "autoregressive"
        } else {
            "bert"
        }
        .into()
    }

    /// Starts `count` fills of `image` (token ids, as `tokenize_rgba` gives them) where `hole` (one
    /// byte per pixel) is non-zero, a BERT model's inpainting (`igpt inpaint`'s, the same pixels for
    /// a seed). `top_k`/`top_p` of 0 mean off; `temperature` 0 is greedy.
    #[allow(clippy::too_many_arguments)]
    pub fn start_inpaint(
        &mut self,
        image: Vec<u16>,
        hole: Vec<u8>,
        count: usize,
        temperature: f32,
        top_k: usize,
        top_p: f32,
        seed: u32,
    ) -> Result<(), JsError> {
        let config = SamplingConfig::zero_as_off(temperature, top_k, top_p);
        let hole: Vec<bool> = hole.iter().map(|&h| h != 0).collect();
        let (seed, image) = (seed as u64, image.as_slice());
        self.inpainting = Some(match &self.engine {
            Backends::Gpu(e) => Inpainting::new(&e.model, image, &hole, count, config, seed)?,
            Backends::Cpu(e) => Inpainting::new(&e.model, image, &hole, count, config, seed)?,
        });
        Ok(())
    }

    /// Fills up to `passes` more pixels of every image (one pass each); returns how many pixels each
    /// image has filled now, of `inpaint_hole_size()`.
    pub async fn advance_inpaint(&mut self, passes: usize) -> Result<usize, JsError> {
        let fill = self
            .inpainting
            .as_mut()
            .ok_or_else(|| JsError::new("call start_inpaint() before advance_inpaint()"))?;
        match &self.engine {
            Backends::Gpu(e) => e.inpaint(fill, passes).await?,
            Backends::Cpu(e) => e.inpaint(fill, passes).await?,
        }
        Ok(fill.filled())
    }

    /// Pixels each fill's hole holds.
    pub fn inpaint_hole_size(&self) -> usize {
        self.inpainting.as_ref().map_or(0, Inpainting::hole_size)
    }

    /// Every fill's token ids as they stand (filled pixels drawn, the rest as given), concatenated.
    pub fn inpaint_tokens(&self) -> Vec<u16> {
        self.inpainting
            .as_ref()
            .map_or(Vec::new(), |f| f.images().concat())
    }

    /// RGBA of every palette colour, colour id after colour id.
    pub fn colours_rgba(&self) -> Vec<u8> {
        self.colours.concat()
    }

    /// Token ids of RGBA pixels of any size (an uploaded file the browser decoded, a canvas drawing):
    /// transparency laid over black, resized and quantised to the palette, as the model sees it.
    pub fn tokenize_rgba(
        &self,
        rgba: &[u8],
        width: usize,
        height: usize,
    ) -> Result<Vec<u16>, JsError> {
        let image = Raster::from_rgba(width, height, rgba, self.tokenizer.palette.channels())?;
        Ok(self.tokenizer.tokenize(&image))
    }
}

/// The patch of `source`'s states over `region` at `layer`; none without a source.
fn patch_for<B: Backend>(
    model: &Model<B>,
    source: Option<&[u16]>,
    layer: usize,
    region: &str,
    width: usize,
) -> Result<Option<Patch<B>>, JsError> {
    let Some(source) = source else {
        return Ok(None);
    };
    let region: Region = region.parse()?;
    Ok(Some(patching::patch_from(
        model, source, layer, region, width,
    )?))
}

/// The means a mean ablation uses (`mean`), or none for a zero ablation.
fn means_for(mean: bool, means: Option<&AblationMeans>) -> Result<Option<&AblationMeans>, JsError> {
    match (mean, means) {
        (false, _) => Ok(None),
        (true, Some(means)) => Ok(Some(means)),
        (true, None) => Err(JsError::new(
            "this model has no ablation means, so only zero ablation is possible",
        )),
    }
}

/// Checks an image file's header before the browser decodes it: a PNG, JPEG, GIF, BMP or WebP whose
/// declared size is within the limit (a small file can declare 100 megapixels), else a clear error.
#[wasm_bindgen]
pub fn check_image_header(bytes: &[u8]) -> Result<(), JsError> {
    crate::pixels::raster::declared_size(bytes)?;
    Ok(())
}

impl ImageGpt {
    fn sequences(&self) -> &[Vec<u16>] {
        match &self.engine {
            Backends::Gpu(e) => e.sequences(),
            Backends::Cpu(e) => e.sequences(),
        }
    }

    fn colour(&self, id: u16) -> Result<&[u8; 4], JsError> {
        self.colours
            .get(id as usize)
            .ok_or_else(|| JsError::new(&format!("token {id} is not a colour of this palette")))
    }

    /// A label as the page reads it: the explanation's numbers and the class names.
    fn label_json(&self, explained: &Explanation) -> Result<String, JsError> {
        Ok(explained.to_json(&self.labels)?.to_string())
    }
}

/// One image as the model saw it (see `igpt::inspect`): every view of the page's inspector reads
/// from here, without running the model again. Pixels are raster indices.
#[wasm_bindgen]
pub struct Inspection {
    inner: Inspected,
    /// A fine-tuned model's label of the image, as `ImageGpt::classify` gives it.
    label: Option<String>,
}

#[wasm_bindgen]
impl Inspection {
    /// The same JSON line as `igpt inspect --json` for pixel `[row, col]`.
    pub fn report(&self, row: usize, col: usize) -> Result<String, JsError> {
        let report = self.inner.report([row, col])?;
        serde_json::to_string(&report).map_err(|e| JsError::new(&e.to_string()))
    }

    /// A fine-tuned model's label of the image from the inspection's own pass: the same JSON as
    /// `ImageGpt::classify`; none for a model without a classification head.
    pub fn label(&self) -> Option<String> {
        self.label.clone()
    }

    pub fn n_layer(&self) -> usize {
        self.inner.n_layer
    }

    pub fn n_head(&self) -> usize {
        self.inner.n_head
    }

    /// Every pixel's surprise in bits.
    pub fn bits(&self) -> Vec<f32> {
        self.inner.bits_per_pixel()
    }

    /// RGB bytes of layer `layer`'s first three principal components (0: the embeddings).
    pub fn features(&self, layer: usize) -> Result<Vec<u8>, JsError> {
        if layer > self.inner.n_layer {
            return Err(JsError::new(&format!(
                "the model has layers 0..={}",
                self.inner.n_layer
            )));
        }
        Ok(self.inner.features_rgb(layer))
    }

    /// The distribution at `pixel` as sampling with this temperature (0: greedy) and top-k (0: off)
    /// draws from it, by the sampler's own code: JSON `{"choices": [{"id", "p"}, ...] (up to 16),
    /// "actual": {"id", "p"}, "rank": n or null when top-k leaves the true colour out}`.
    pub fn distribution(
        &self,
        pixel: usize,
        temperature: f32,
        top_k: usize,
    ) -> Result<String, JsError> {
        self.check(pixel)?;
        let config = SamplingConfig::zero_as_off(temperature, top_k, 0.0);
        let reshaped = self
            .inner
            .reshaped::<Flex>(pixel, &config, 16, &Default::default())?;
        serde_json::to_string(&reshaped).map_err(|e| JsError::new(&e.to_string()))
    }

    /// Cosine similarity of `pixel`'s position embedding with every position's.
    pub fn positions(&self, pixel: usize) -> Result<Vec<f32>, JsError> {
        self.check(pixel)?;
        Ok(self.inner.position_similarity(pixel))
    }
}

impl Inspection {
    fn check(&self, pixel: usize) -> Result<(), JsError> {
        let n = self.inner.ids.len();
        if pixel >= n {
            return Err(JsError::new(&format!(
                "pixel {pixel} is past the image's {n}"
            )));
        }
        Ok(())
    }
}

/// The largest GPU buffer, in bytes, that the model of this `config.json` text needs to sample
/// `batch` images at once (`ImageGptConfig::largest_buffer_bytes`): the page compares it with the
/// adapter's limits before it downloads any weight.
#[wasm_bindgen]
pub fn gpu_buffer_bytes(config_json: &str, batch: usize) -> Result<f64, JsError> {
    Ok(crate::store::parse_config(config_json)?.largest_buffer_bytes(batch) as f64)
}

/// The inspector's heat colours, 256 steps from 0 to 1 as RGB bytes (see [`heat_ramp`]).
#[wasm_bindgen]
pub fn heat_ramp() -> Vec<u8> {
    inspect::heat_ramp(256)
}

/// Bytes of linear memory the wasm module holds (it only grows): the e2e tests check that a hostile
/// upload, such as a 100-megapixel image, is refused before it makes the module allocate.
#[wasm_bindgen]
pub fn wasm_memory_bytes() -> usize {
    core::arch::wasm32::memory_size(0) * 65536
}
