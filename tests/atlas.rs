//! The feature atlas: every unit's images are the ones whose peak is highest, each hit is that
//! image's peak, recomputed from scratch, and a direction's two ends rank opposite ways.

mod common;

use burn::tensor::{Int, Tensor, TensorData};
use common::{B, fixture_dir};
use igpt::inspect::atlas::{self, AtlasOptions, UnitKind};
use igpt::{ForwardOptions, store};

fn images() -> Vec<Vec<u16>> {
    (0..12u16)
        .map(|i| (0..64u16).map(|p| (p * (i + 3) + i * i) % 16).collect())
        .collect()
}

/// Image `ids`' MLP neurons of block `block`, `[positions][neurons]`, from a forward of it alone.
fn neurons_of(model: &igpt::ImageGpt<B>, ids: &[u16], block: usize) -> Vec<Vec<f32>> {
    let input: Vec<i64> = std::iter::once(16)
        .chain(ids[..63].iter().map(|&v| v as i64))
        .collect();
    let input =
        Tensor::<B, 2, Int>::from_data(TensorData::new(input, [1, 64]), &Default::default());
    let options = ForwardOptions {
        residual: true,
        ..Default::default()
    };
    let pass = model.forward_with(input, options);
    let neurons = model.mlp_neurons(block, pass.residual[block].clone());
    let width = neurons.dims()[2];
    let values: Vec<f32> = neurons.into_data().convert::<f32>().into_vec().unwrap();
    values.chunks(width).map(<[f32]>::to_vec).collect()
}

#[test]
fn atlas_units_rank_images_by_their_peaks() {
    let model = store::load_dir::<B>(&fixture_dir(), &Default::default())
        .unwrap()
        .model;
    let images = images();
    let options = AtlasOptions {
        layer: 1,
        directions: 3,
        neurons: 5,
        top: 4,
        fit_images: 6,
        batch: 5,
    };
    let atlas = atlas::build(&model, &images, &options, |_, _| {}).unwrap();
    assert_eq!(atlas.scanned, 12);
    let directions: Vec<_> = atlas
        .units
        .iter()
        .filter(|u| u.kind == UnitKind::Direction)
        .collect();
    assert_eq!(directions.len(), 6, "two ends of three directions");
    for pair in directions.chunks(2) {
        assert_eq!((pair[0].sign, pair[1].sign), (1, -1));
        // The top of the positive end is at least the top of the negative end's value.
        assert!(pair[0].top[0].activation >= pair[1].top[0].activation);
        for unit in pair {
            let ranked: Vec<f32> = unit
                .top
                .iter()
                .map(|h| unit.sign as f32 * h.activation)
                .collect();
            assert!(ranked.windows(2).all(|w| w[0] >= w[1]), "{ranked:?}");
        }
    }
    assert!(
        directions
            .windows(2)
            .all(|w| w[0].variance >= w[1].variance),
        "directions come in order of variance"
    );

    // Neurons: brute force over every image and position.
    let peaks: Vec<Vec<(usize, f32)>> = images
        .iter()
        .map(|ids| {
            let rows = neurons_of(&model, ids, 0);
            (0..rows[0].len())
                .map(|n| {
                    (0..rows.len())
                        .map(|p| (p, rows[p][n]))
                        .fold((0, f32::NEG_INFINITY), |a, b| if b.1 > a.1 { b } else { a })
                })
                .collect()
        })
        .collect();
    let neurons: Vec<_> = atlas
        .units
        .iter()
        .filter(|u| u.kind == UnitKind::Neuron)
        .collect();
    assert_eq!(neurons.len(), 5);
    assert!(neurons.windows(2).all(|w| w[0].variance >= w[1].variance));
    for unit in neurons {
        assert_eq!(unit.top.len(), 4);
        for hit in &unit.top {
            let image = atlas.images[hit.image];
            let (pixel, peak) = peaks[image][unit.index];
            assert_eq!(hit.pixel, pixel, "neuron {} image {image}", unit.index);
            assert!(
                (hit.activation - peak).abs() < 1e-4,
                "{} vs {peak}",
                hit.activation
            );
        }
        // No image left out peaks higher than the last one kept.
        let last = unit.top.last().unwrap().activation;
        let kept: Vec<usize> = unit.top.iter().map(|h| atlas.images[h.image]).collect();
        for (image, peak) in peaks.iter().enumerate() {
            if !kept.contains(&image) {
                assert!(
                    peak[unit.index].1 <= last + 1e-4,
                    "image {image} beats the kept ones"
                );
            }
        }
    }
    // The sprite's images are named once each.
    let mut seen = atlas.images.clone();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), atlas.images.len());
}

#[test]
fn an_atlas_of_a_layer_past_the_last_is_refused() {
    let model = store::load_dir::<B>(&fixture_dir(), &Default::default())
        .unwrap()
        .model;
    let options = AtlasOptions {
        layer: model.n_layer() + 1,
        directions: 2,
        neurons: 2,
        top: 2,
        fit_images: 2,
        batch: 2,
    };
    let error = atlas::build(&model, &images(), &options, |_, _| {}).unwrap_err();
    assert!(error.to_string().contains("does not exist"), "{error}");
}
