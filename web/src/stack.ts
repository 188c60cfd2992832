// The Cornerstone3D stack viewport: wheel scrolls slices, left drag sets window/level, right drag
// zooms, middle drag (or Ctrl+left) pans; every slice is fetched up front so scrolling never waits.
import {
  Enums,
  RenderingEngine,
  imageLoader,
  init as initCore,
  utilities,
  type StackViewport,
  type Types,
} from '@cornerstonejs/core';
import {
  Enums as ToolEnums,
  PanTool,
  StackScrollTool,
  ToolGroupManager,
  WindowLevelTool,
  ZoomTool,
  addTool,
  init as initTools,
} from '@cornerstonejs/tools';
import type { ImageToCanvas } from './overlays';

const ENGINE_ID = 'spinedx-engine';
const VIEWPORT_ID = 'spinedx-stack';
const TOOL_GROUP_ID = 'spinedx-tools';

let initialised = false;

export async function initCornerstone(): Promise<void> {
  if (initialised) return;
  initCore();
  initTools();
  for (const tool of [PanTool, StackScrollTool, WindowLevelTool, ZoomTool]) addTool(tool);
  initialised = true;
}

/** Window/level presets as percentiles of the shown slice's intensities (MR has no absolute scale). */
export const WINDOW_PRESETS: Record<string, [number, number]> = {
  Auto: [0.01, 0.995],
  Full: [0, 1],
  'Soft tissue': [0.2, 0.9],
  Bright: [0.5, 1],
};

export class Stack {
  private readonly viewport: StackViewport;
  private readonly engine: RenderingEngine;
  private readonly resizes: ResizeObserver;
  private imageIds: string[] = [];

  constructor(element: HTMLDivElement) {
    this.engine = new RenderingEngine(ENGINE_ID);
    this.engine.enableElement({
      viewportId: VIEWPORT_ID,
      type: Enums.ViewportType.STACK,
      element,
      defaultOptions: { background: [0.02, 0.03, 0.06] as Types.Point3 },
    });
    this.viewport = this.engine.getViewport(VIEWPORT_ID) as StackViewport;
    ToolGroupManager.destroyToolGroup(TOOL_GROUP_ID);
    const tools = ToolGroupManager.createToolGroup(TOOL_GROUP_ID)!;
    for (const tool of [PanTool, StackScrollTool, WindowLevelTool, ZoomTool]) tools.addTool(tool.toolName);
    tools.addViewport(VIEWPORT_ID, ENGINE_ID);
    const { MouseBindings, KeyboardBindings } = ToolEnums;
    tools.setToolActive(WindowLevelTool.toolName, { bindings: [{ mouseButton: MouseBindings.Primary }] });
    tools.setToolActive(PanTool.toolName, {
      bindings: [
        { mouseButton: MouseBindings.Auxiliary },
        { mouseButton: MouseBindings.Primary, modifierKey: KeyboardBindings.Ctrl },
      ],
    });
    tools.setToolActive(ZoomTool.toolName, { bindings: [{ mouseButton: MouseBindings.Secondary }] });
    tools.setToolActive(StackScrollTool.toolName, { bindings: [{ mouseButton: MouseBindings.Wheel }] });
    this.resizes = new ResizeObserver(() => this.engine.resize(true, false));
    this.resizes.observe(element);
  }

  async show(imageIds: string[], index: number): Promise<void> {
    this.imageIds = imageIds;
    await this.viewport.setStack(imageIds, index);
    this.applyPreset('Auto');
  }

  /** Loads every slice into the cache; `progress(loaded, total)` after each. */
  prefetch(progress: (loaded: number, total: number) => void): Promise<void> {
    let loaded = 0;
    const total = this.imageIds.length;
    return Promise.all(
      this.imageIds.map((imageId) =>
        imageLoader.loadAndCacheImage(imageId).then(() => progress(++loaded, total)),
      ),
    ).then(() => undefined);
  }

  get index(): number {
    return this.viewport.getCurrentImageIdIndex();
  }

  get count(): number {
    return this.imageIds.length;
  }

  async goTo(index: number): Promise<void> {
    await this.viewport.setImageIdIndex(Math.max(0, Math.min(this.count - 1, index)));
  }

  applyPreset(name: string): void {
    const image = this.viewport.getCornerstoneImage();
    if (!image) return;
    const [low, high] = WINDOW_PRESETS[name];
    const sorted = Float32Array.from(image.getPixelData()).sort();
    const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
    const lower = at(low);
    const upper = Math.max(at(high), lower + 1);
    this.viewport.setProperties({ voiRange: { lower, upper } });
    this.viewport.render();
  }

  zoomBy(factor: number): void {
    this.viewport.setZoom(this.viewport.getZoom() * factor);
    this.viewport.render();
  }

  reset(): void {
    this.viewport.resetCamera();
    this.applyPreset('Auto');
  }

  /** The current image→canvas mapping, from three image points through the viewport's world. */
  imageToCanvas(): ImageToCanvas | null {
    const imageId = this.viewport.getCurrentImageId();
    if (!imageId) return null;
    // Cornerstone's image coordinates put pixel centres on integers; ours put pixel edges there.
    const toCanvas = (x: number, y: number) => {
      const world = utilities.imageToWorldCoords(imageId, [x - 0.5, y - 0.5]);
      return world ? this.viewport.worldToCanvas(world) : null;
    };
    const origin = toCanvas(0, 0);
    const right = toCanvas(1, 0);
    const down = toCanvas(0, 1);
    if (!origin || !right || !down) return null;
    return {
      a: right[0] - origin[0],
      b: right[1] - origin[1],
      c: down[0] - origin[0],
      d: down[1] - origin[1],
      e: origin[0],
      f: origin[1],
    };
  }

  destroy(): void {
    this.resizes.disconnect();
    ToolGroupManager.destroyToolGroup(TOOL_GROUP_ID);
    this.engine.destroy();
  }
}
