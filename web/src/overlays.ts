// Overlays (disc boxes with level names, the segmentation label map, Grad-CAM heatmaps) rasterised
// once in image pixels, then drawn on a canvas above the viewport through the viewport's own
// image→canvas mapping, so they stay on the anatomy under zoom, pan and resize.
import type { Disc } from './api';
import type { GrayImage } from './png';

export type Rgb = [number, number, number];

/** Colour per label name of labels.json; unknown labels get a neutral colour. */
export const LABEL_COLOURS: Record<string, Rgb> = {
  vertebra: [66, 133, 244],
  disc: [255, 196, 0],
  spinal_canal: [214, 61, 214],
};
const OTHER_LABEL: Rgb = [0, 200, 120];
export const MASK_ALPHA = 0.45;

/** A 2x3 affine map from image pixel coordinates (edges at integers) to canvas CSS pixels. */
export interface ImageToCanvas {
  a: number;
  b: number;
  c: number;
  d: number;
  e: number;
  f: number;
}

function apply(t: ImageToCanvas, x: number, y: number): [number, number] {
  return [t.a * x + t.c * y + t.e, t.b * x + t.d * y + t.f];
}

function toCanvas(image: ImageData): HTMLCanvasElement {
  const canvas = document.createElement('canvas');
  canvas.width = image.width;
  canvas.height = image.height;
  canvas.getContext('2d')!.putImageData(image, 0, 0);
  return canvas;
}

export function labelMapLayer(mask: GrayImage, labels: Record<string, string>): HTMLCanvasElement {
  const rgba = new ImageData(mask.width, mask.height);
  const colours = new Map<number, Rgb>();
  for (const [value, name] of Object.entries(labels)) {
    if (Number(value) !== 0) colours.set(Number(value), LABEL_COLOURS[name] ?? OTHER_LABEL);
  }
  const alpha = Math.round(MASK_ALPHA * 255);
  mask.pixels.forEach((label, i) => {
    const colour = colours.get(label);
    if (!colour) return;
    rgba.data.set([...colour, alpha], i * 4);
  });
  return toCanvas(rgba);
}

/** "Inferno"-like ramp: transparent where the model saw nothing, opaque yellow where it looked hardest. */
function heatColour(value: number): [number, number, number, number] {
  const t = value / 255;
  const r = Math.min(255, Math.round(510 * t));
  const g = Math.round((255 * Math.max(0, t - 0.35)) / 0.65);
  const b = Math.round(160 * Math.max(0, 0.5 - Math.abs(t - 0.25) * 2));
  return [r, g, b, Math.round(210 * Math.pow(t, 1.4))];
}

/** One disc's Grad-CAM heatmap (8- or 16-bit gray, 255 or 65535 = strongest) as a colour layer. */
export function heatmapLayer(heatmap: GrayImage): HTMLCanvasElement {
  const scale = heatmap.pixels instanceof Uint16Array ? 1 / 257 : 1;
  const rgba = new ImageData(heatmap.width, heatmap.height);
  heatmap.pixels.forEach((value, i) => {
    if (value > 0) rgba.data.set(heatColour(value * scale), i * 4);
  });
  return toCanvas(rgba);
}

export interface OverlayContent {
  discs: Disc[];
  selectedLevel: string | null;
  mask: HTMLCanvasElement | null;
  /** Heatmap layer per level; only the selected level's is drawn. */
  heatmaps: Map<string, HTMLCanvasElement>;
  show: { boxes: boolean; mask: boolean; heatmap: boolean };
}

export function drawOverlays(canvas: HTMLCanvasElement, t: ImageToCanvas, content: OverlayContent): void {
  const dpr = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  if (canvas.width !== Math.round(width * dpr) || canvas.height !== Math.round(height * dpr)) {
    canvas.width = Math.round(width * dpr);
    canvas.height = Math.round(height * dpr);
  }
  const ctx = canvas.getContext('2d')!;
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.scale(dpr, dpr);

  ctx.save();
  ctx.transform(t.a, t.b, t.c, t.d, t.e, t.f);
  ctx.imageSmoothingEnabled = false;
  if (content.show.mask && content.mask) ctx.drawImage(content.mask, 0, 0);
  ctx.imageSmoothingEnabled = true;
  const heatmap = content.selectedLevel ? content.heatmaps.get(content.selectedLevel) : undefined;
  if (content.show.heatmap && heatmap) ctx.drawImage(heatmap, 0, 0);
  ctx.restore();

  if (!content.show.boxes) return;
  ctx.font = '600 12px system-ui, sans-serif';
  ctx.textBaseline = 'middle';
  for (const disc of content.discs) {
    const selected = disc.level === content.selectedLevel;
    const [x0, y0, x1, y1] = disc.box;
    const corners = [apply(t, x0, y0), apply(t, x1, y0), apply(t, x1, y1), apply(t, x0, y1)];
    ctx.beginPath();
    corners.forEach(([x, y], i) => (i === 0 ? ctx.moveTo(x, y) : ctx.lineTo(x, y)));
    ctx.closePath();
    ctx.lineWidth = selected ? 2.5 : 1.25;
    ctx.strokeStyle = selected ? '#4fd1ff' : 'rgba(255,255,255,0.75)';
    ctx.stroke();
    const left = Math.min(...corners.map(([x]) => x));
    const middle = corners.reduce((sum, [, y]) => sum + y, 0) / 4;
    const label = disc.level;
    const textWidth = ctx.measureText(label).width;
    const labelX = left - textWidth - 14;
    ctx.fillStyle = selected ? 'rgba(79,209,255,0.92)' : 'rgba(15,23,42,0.78)';
    ctx.beginPath();
    ctx.roundRect(labelX - 5, middle - 9, textWidth + 10, 18, 4);
    ctx.fill();
    ctx.fillStyle = selected ? '#0b1220' : '#e2e8f0';
    ctx.fillText(label, labelX, middle);
  }
}
