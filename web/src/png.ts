import { decode } from 'fast-png';

/** One channel of a PNG at its stored depth: 16-bit slices keep their range for window/level. */
export interface GrayImage {
  width: number;
  height: number;
  pixels: Uint8Array | Uint16Array;
}

/** Decodes a PNG to one gray channel (colour PNGs by luma, alpha dropped). */
export function decodeGray(bytes: ArrayBuffer): GrayImage {
  const png = decode(new Uint8Array(bytes));
  if (png.palette) {
    throw new Error('palette PNGs are not grayscale slices');
  }
  const source = png.data as Uint8Array | Uint16Array;
  const { width, height, channels } = png;
  if (channels === 1) {
    return { width, height, pixels: source };
  }
  const pixels = new (source.constructor as typeof Uint8Array | typeof Uint16Array)(width * height);
  for (let i = 0; i < pixels.length; i++) {
    const o = i * channels;
    // gray+alpha keeps the gray; RGB(A) becomes its luma
    pixels[i] = channels < 3 ? source[o] : Math.round(0.299 * source[o] + 0.587 * source[o + 1] + 0.114 * source[o + 2]);
  }
  return { width, height, pixels };
}
