// The feature atlas (igpt atlas): for one layer, the images and pixels that excite its top principal
// directions and its most variable MLP neurons. The model ships it as atlas.json plus atlas.png, a
// sprite of the whole images, both verified by hash like the weights. Choosing a unit shows its
// images, the pixel marked; clicking one opens that image in the inspector at that pixel.

const ENLARGE = 3;

/// Shows `atlas` (atlas.json, parsed) with its sprite (`spriteBytes`, atlas.png). `open(rgba, width,
/// height, pixel)` opens an image in the inspector.
export async function showAtlas(atlas, spriteBytes, open) {
  const { columns, tile_width: w, tile_height: h } = atlas.sprite;
  const bitmap = await createImageBitmap(new Blob([spriteBytes], { type: "image/png" }),
    { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  const sprite = document.createElement("canvas");
  sprite.width = bitmap.width;
  sprite.height = bitmap.height;
  const spriteContext = sprite.getContext("2d", { willReadFrequently: true });
  spriteContext.drawImage(bitmap, 0, 0);
  bitmap.close();
  const tile = (image) => spriteContext.getImageData((image % columns) * w, Math.floor(image / columns) * h, w, h);

  const select = document.getElementById("atlas-unit");
  select.replaceChildren(...atlas.units.map((u, i) => new Option(unitLabel(u), String(i))));
  document.getElementById("atlas-about").textContent = `Layer ${atlas.layer} (0 is the embeddings), ` +
    `over ${atlas.scanned} images of ${atlas.data}: its ${atlas.units.filter((u) => u.kind === "direction").length / 2} ` +
    `principal directions, each by both ends, and the ${atlas.units.filter((u) => u.kind === "neuron").length} MLP ` +
    `neurons of block ${atlas.layer} that vary most. A marked pixel is the one whose prediction the unit peaks ` +
    "at, having read every pixel before it. Click an image to inspect it there.";
  const show = () => {
    const unit = atlas.units[Number(select.value)];
    const hits = document.getElementById("atlas-hits");
    hits.replaceChildren(...unit.top.map((hit, rank) => {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "atlas-hit";
      const canvas = document.createElement("canvas");
      canvas.width = w * ENLARGE;
      canvas.height = h * ENLARGE;
      const context = canvas.getContext("2d");
      const pixels = tile(hit.image);
      const small = document.createElement("canvas");
      small.width = w;
      small.height = h;
      small.getContext("2d").putImageData(pixels, 0, 0);
      context.imageSmoothingEnabled = false;
      context.drawImage(small, 0, 0, canvas.width, canvas.height);
      const [x, y] = [hit.pixel % w, Math.floor(hit.pixel / w)];
      context.lineWidth = 2;
      context.strokeStyle = "#e4007c";
      context.strokeRect(x * ENLARGE - 2, y * ENLARGE - 2, ENLARGE + 4, ENLARGE + 4);
      const source = atlas.images[hit.image]; // its index in atlas.data
      button.setAttribute("aria-label", `${rank + 1}: image ${source} of ${atlas.data}, pixel (${y}, ${x}), ` +
        `activation ${hit.activation.toFixed(2)}; opens it in the inspector`);
      const caption = document.createElement("span");
      caption.textContent = `#${source} (${y}, ${x}) ${hit.activation.toFixed(2)}`;
      button.append(canvas, caption);
      button.onclick = () => open(new Uint8Array(pixels.data.buffer.slice(0)), w, h, hit.pixel);
      return button;
    }));
  };
  select.onchange = show;
  show();
}

function unitLabel(unit) {
  const spread = `variance ${unit.variance.toPrecision(3)}`;
  return unit.kind === "direction"
    ? `direction ${unit.index + 1}, ${unit.sign > 0 ? "positive" : "negative"} end (${spread})`
    : `MLP neuron ${unit.index} (${spread})`;
}
