// Cornerstone3D image loader for the scheme "spinedx:": the image id is "spinedx:<API path of a PNG
// slice>", fetched with the session's token and decoded here, so 16-bit slices keep their full range.
// The geometry of each slice comes from a metadata provider filled before the stack is shown.
import { Enums, imageLoader, metaData, utilities, type Types } from '@cornerstonejs/core';
import type { Api } from './api';
import { decodeGray } from './png';

const SCHEME = 'spinedx';

interface SliceGeometry {
  width: number;
  height: number;
  rowSpacing: number;
  columnSpacing: number;
  index: number;
  bitsStored: number;
}

const geometries = new Map<string, SliceGeometry>();

export function sliceImageId(studyId: string, index: number): string {
  return `${SCHEME}:/api/studies/${encodeURIComponent(studyId)}/slices/${index}`;
}

/** Declares the geometry of a stack's slices (all the same size, parallel, one unit apart). */
export function describeStack(
  imageIds: string[],
  { width, height }: { width: number; height: number },
  spacing: [number, number] | null,
): void {
  const [rowSpacing, columnSpacing] = spacing ?? [1, 1];
  imageIds.forEach((imageId, index) =>
    geometries.set(imageId, { width, height, rowSpacing, columnSpacing, index, bitsStored: 16 }),
  );
}

function metadataFor(type: string, imageId: string): Record<string, unknown> | undefined {
  const geometry = geometries.get(imageId);
  if (!geometry) return undefined;
  const { width, height, rowSpacing, columnSpacing, index } = geometry;
  switch (type) {
    case Enums.MetadataModules.IMAGE_PLANE:
      return {
        frameOfReferenceUID: 'spinedx',
        rows: height,
        columns: width,
        imageOrientationPatient: [1, 0, 0, 0, 1, 0],
        rowCosines: [1, 0, 0],
        columnCosines: [0, 1, 0],
        imagePositionPatient: [0, 0, index],
        pixelSpacing: [rowSpacing, columnSpacing],
        rowPixelSpacing: rowSpacing,
        columnPixelSpacing: columnSpacing,
        sliceThickness: 1,
      };
    case Enums.MetadataModules.IMAGE_PIXEL:
      return {
        samplesPerPixel: 1,
        photometricInterpretation: 'MONOCHROME2',
        rows: height,
        columns: width,
        bitsAllocated: geometry.bitsStored,
        bitsStored: geometry.bitsStored,
        highBit: geometry.bitsStored - 1,
        pixelRepresentation: 0,
      };
    case Enums.MetadataModules.GENERAL_SERIES:
      return { modality: 'MR', seriesInstanceUID: 'spinedx' };
    case Enums.MetadataModules.MODALITY_LUT:
      return { rescaleSlope: 1, rescaleIntercept: 0 };
    default:
      return undefined;
  }
}

function minMax(pixels: Uint8Array | Uint16Array): [number, number] {
  let min = Infinity;
  let max = -Infinity;
  for (const value of pixels) {
    if (value < min) min = value;
    if (value > max) max = value;
  }
  return [min, max];
}

async function loadSlice(api: Api, imageId: string, signal: AbortSignal): Promise<Types.IImage> {
  const geometry = geometries.get(imageId);
  if (!geometry) throw new Error(`no stack declares ${imageId}`);
  const gray = decodeGray(await api.bytes(imageId.slice(SCHEME.length + 1), signal));
  const { width, height, pixels } = gray;
  geometry.bitsStored = pixels instanceof Uint16Array ? 16 : 8;
  const [min, max] = minMax(pixels);
  const voxelManager = utilities.VoxelManager.createImageVoxelManager({
    width,
    height,
    numberOfComponents: 1,
    scalarData: pixels,
    id: imageId,
  });
  const image: Types.IImage = {
    imageId,
    minPixelValue: min,
    maxPixelValue: max,
    slope: 1,
    intercept: 0,
    windowCenter: (min + max) / 2,
    windowWidth: Math.max(1, max - min),
    voiLUTFunction: Enums.VOILUTFunctionType.LINEAR,
    getPixelData: () => pixels,
    getCanvas: () => {
      throw new Error('slices render through the viewport');
    },
    rows: height,
    columns: width,
    height,
    width,
    color: false,
    rgba: false,
    numberOfComponents: 1,
    columnPixelSpacing: geometry.columnSpacing,
    rowPixelSpacing: geometry.rowSpacing,
    invert: false,
    photometricInterpretation: 'MONOCHROME2',
    sizeInBytes: pixels.byteLength,
    dataType: pixels instanceof Uint16Array ? 'Uint16Array' : 'Uint8Array',
    voxelManager: voxelManager as Types.IVoxelManager<number>,
    FrameOfReferenceUID: 'spinedx',
  };
  return image;
}

export function registerSliceLoader(api: Api): void {
  metaData.addProvider(metadataFor, 10000);
  imageLoader.registerImageLoader(SCHEME, (imageId: string) => {
    const controller = new AbortController();
    return { promise: loadSlice(api, imageId, controller.signal), cancelFn: () => controller.abort() };
  });
}
