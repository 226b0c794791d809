//! The real Fashion-MNIST files from Debian's `dataset-fashion-mnist` package.

use igpt::data::DataSpec;

#[test]
fn both_splits_load_whole() {
    for (spec, n) in [
        ("fashion-mnist:train", 60_000),
        ("fashion-mnist:test", 10_000),
    ] {
        let data = spec.parse::<DataSpec>().unwrap().load().unwrap();
        assert_eq!(data.len(), n, "{spec}");
        assert_eq!(data.labels.len(), n);
        let img = &data.images[0];
        assert_eq!((img.width, img.height, img.channels), (28, 28, 1));
        let mut per_class = [0usize; 10];
        for &l in &data.labels {
            per_class[l] += 1;
        }
        // Fashion-MNIST is balanced: n/10 images of each class.
        assert!(per_class.iter().all(|&c| c == n / 10), "{per_class:?}");
        assert_eq!(data.classes[9], "Ankle boot");
    }
}
