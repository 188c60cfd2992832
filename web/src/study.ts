// One study: the stack viewport with its overlays, the per-level findings panel and the keyboard review.
import type { Api, Disc, Findings, FindingValue, SliceInfo, Study } from './api';
import { h, percent } from './dom';
import { describeStack, sliceImageId } from './loader';
import {
  LABEL_COLOURS,
  MASK_ALPHA,
  drawOverlays,
  heatmapLayer,
  labelMapLayer,
  type OverlayContent,
} from './overlays';
import { decodeGray } from './png';
import { FINDING_NAMES, Review, TOGGLE_KEYS, findingId, isOrdinal } from './review';
import { Stack, WINDOW_PRESETS, initCornerstone } from './stack';
import { Enums } from '@cornerstonejs/core';

const POLL_MS = 1000;

const KEYMAP: Array<[string, string]> = [
  ['↑ / ↓', 'previous / next level'],
  ['← / →', 'previous / next finding of the level'],
  ['A / R', 'accept / reject the finding'],
  ['1 – 5', 'set the Pfirrmann grade'],
  ['H B N S', 'toggle herniation, bulging, narrowing, stenosis'],
  ['Enter', 'save, go to the next unreviewed finding'],
  ['L M G', 'boxes and levels, mask, heatmap overlays'],
  ['PgUp / PgDn', 'previous / next slice (wheel too)'],
  ['Home', 'the analysed slice'],
  ['+ / − / Z', 'zoom in, out, reset view'],
];

function formatValue(kind: string, value: FindingValue, decided: boolean): string {
  if (value === null) return decided ? 'rejected' : '—';
  if (typeof value === 'boolean') return value ? (kind === 'disc' ? 'present' : 'yes') : 'no';
  return kind === 'pfirrmann' ? `grade ${value}` : kind === 'modic' ? `type ${value}` : String(value);
}

/** What the model said: its value with the probability it gave that value. */
function modelText(disc: Disc, kind: string): string {
  if (kind === 'disc') return `model: detected · score ${percent(disc.score)}`;
  const grade = disc.grades[kind];
  if (!grade) return '';
  if (!isOrdinal(grade)) return `model: p ${percent(grade.probability)}`;
  const first = kind === 'pfirrmann' ? 1 : 0;
  return `model: ${formatValue(kind, grade.grade, false)} · ${percent(grade.probabilities[grade.grade - first] ?? 0)}`;
}

/** The model's probability per grade: its choice filled, a person's different value outlined. */
function probabilityBars(disc: Disc, kind: string, current: FindingValue): HTMLElement | null {
  const grade = disc.grades[kind];
  if (!isOrdinal(grade)) return null;
  const first = kind === 'pfirrmann' ? 1 : 0;
  return h(
    'div',
    { className: 'bars', title: 'model probability per grade' },
    ...grade.probabilities.map((p, i) => {
      const classes = ['bar'];
      if (i + first === grade.grade) classes.push('top');
      if (i + first === current && current !== grade.grade) classes.push('current');
      return h(
        'span',
        { className: classes.join(' ') },
        h('i', { style: `height:${Math.max(2, Math.round(p * 100))}%` }),
        h('b', {}, String(i + first)),
      );
    }),
  );
}

function measurementRows(disc: Disc): HTMLElement | null {
  // Without a pixel spacing the *_mm values are in pixels (findings schema); the unit says which.
  const unit = disc.measurements.unit === 'mm' ? 'mm' : 'px';
  const rows = Object.entries(disc.measurements)
    .filter(([key, value]) => key !== 'unit' && typeof value === 'number')
    .map(([key, value]) => {
      const label = key.replace(/_(mm2|mm|px)$/, '').replace(/_/g, ' ');
      const suffix = key.endsWith('_mm2') ? ` ${unit}²` : key.endsWith('_mm') ? ` ${unit}` : key.endsWith('_px') ? ' px' : '';
      return h('tr', {}, h('th', {}, label), h('td', {}, `${(value as number).toFixed(2)}${suffix}`));
    });
  return rows.length ? h('table', { className: 'measurements' }, ...rows) : null;
}

export class StudyView {
  private stack: Stack | null = null;
  private review: Review | null = null;
  private findings: Findings | null = null;
  private slices: SliceInfo | null = null;
  private overlay: OverlayContent = {
    discs: [],
    selectedLevel: null,
    mask: null,
    heatmaps: new Map(),
    show: { boxes: true, mask: false, heatmap: false },
  };
  private closed = false;
  private readonly body = h('div', { className: 'study-body' });
  private readonly statusLine = h('span', { className: 'status-line', 'data-testid': 'study-status' });
  private readonly progressLine = h('span', { className: 'progress-line', 'data-testid': 'review-progress' });
  private readonly message = h('div', { className: 'message', role: 'status' });
  private readonly panel = h('aside', { className: 'panel', 'data-testid': 'findings-panel' });
  private readonly sliceLine = h('span', { className: 'slice-line', 'data-testid': 'slice-line' });
  private readonly cacheLine = h('span', { className: 'cache-line', 'data-testid': 'cache-line' });
  private readonly overlayCanvas = h('canvas', { className: 'overlay', 'data-testid': 'overlay' });
  private readonly keyHandler = (event: KeyboardEvent) => this.onKey(event);
  readonly element: HTMLElement;

  constructor(
    private readonly api: Api,
    private readonly studyId: string,
    back: () => void,
  ) {
    this.element = h(
      'section',
      { className: 'study' },
      h(
        'header',
        { className: 'study-header' },
        h('button', { className: 'ghost', onclick: back }, '← Studies'),
        h('h2', { 'data-testid': 'study-name' }, studyId),
        this.statusLine,
        this.progressLine,
      ),
      this.body,
      this.message,
    );
    document.addEventListener('keydown', this.keyHandler);
    this.waitForAnalysis().catch((error: Error) =>
      this.body.replaceChildren(h('div', { className: 'waiting error' }, h('p', {}, `Could not open the study: ${error.message}`))),
    );
  }

  close(): void {
    this.closed = true;
    document.removeEventListener('keydown', this.keyHandler);
    this.stack?.destroy();
  }

  private say(text: string, tone: 'info' | 'error' = 'info'): void {
    this.message.textContent = text;
    this.message.className = `message ${tone} shown`;
    window.clearTimeout(Number(this.message.dataset.timer));
    this.message.dataset.timer = String(window.setTimeout(() => this.message.classList.remove('shown'), 2600));
  }

  private async waitForAnalysis(): Promise<void> {
    let study: Study;
    for (;;) {
      study = await this.api.study(this.studyId);
      if (this.closed) return;
      (this.element.querySelector('h2') as HTMLElement).textContent = study.name;
      this.statusLine.textContent = study.status;
      this.statusLine.className = `status-line badge ${study.status}`;
      if (study.status === 'done' || study.status === 'failed') break;
      this.body.replaceChildren(
        h(
          'div',
          { className: 'waiting' },
          h('p', {}, study.status === 'queued' ? 'Waiting for a worker…' : 'Analysing…'),
          h('progress', { max: 1, value: study.progress }),
        ),
      );
      await new Promise((resolve) => window.setTimeout(resolve, POLL_MS));
    }
    if (study.status === 'failed') {
      this.body.replaceChildren(h('div', { className: 'waiting error' }, h('p', {}, `Analysis failed: ${study.error}`)));
      return;
    }
    await this.open();
  }

  private async open(): Promise<void> {
    const [slices, findings, state] = await Promise.all([
      this.api.slices(this.studyId),
      this.api.findings(this.studyId),
      this.api.state(this.studyId),
    ]);
    if (this.closed) return;
    this.slices = slices;
    // Head to foot, so ↓ walks down the spine.
    findings.discs.sort((a, b) => a.box[1] + a.box[3] - (b.box[1] + b.box[3]));
    this.findings = findings;
    this.review = new Review(findings.discs);
    this.review.setState(state.findings);
    this.review.moveToNextUndecided(true);
    this.overlay.discs = findings.discs;

    const viewportElement = h('div', { className: 'viewport', 'data-testid': 'viewport' });
    viewportElement.addEventListener('contextmenu', (event) => event.preventDefault());
    const stage = h('div', { className: 'stage' }, viewportElement, this.overlayCanvas);
    this.body.replaceChildren(h('div', { className: 'viewer-column' }, this.toolbar(), stage, this.footer()), this.panel);

    await initCornerstone();
    this.stack = new Stack(viewportElement);
    const imageIds = Array.from({ length: slices.count }, (_, k) => sliceImageId(this.studyId, k));
    describeStack(imageIds, slices, slices.pixel_spacing_mm);
    viewportElement.addEventListener(Enums.Events.IMAGE_RENDERED, () => this.redraw());
    await this.stack.show(imageIds, slices.analysed_index);
    void this.stack
      .prefetch((loaded, total) => {
        this.cacheLine.textContent = loaded === total ? `all ${total} slices loaded` : `loading ${loaded}/${total}`;
        this.cacheLine.dataset.loaded = String(loaded);
      })
      .catch((error: Error) => this.say(`Could not load every slice: ${error.message}`, 'error'));
    this.renderPanel();
    await this.loadLayers(findings);
  }

  private async loadLayers(findings: Findings): Promise<void> {
    if (findings.masks && findings.mask_labels) {
      const [mask, labels] = await Promise.all([
        this.api.file(this.studyId, findings.masks),
        this.api.file(this.studyId, findings.mask_labels),
      ]);
      this.overlay.mask = labelMapLayer(decodeGray(mask), JSON.parse(new TextDecoder().decode(labels)));
    }
    await Promise.all(
      findings.discs.map(async (disc) => {
        if (!disc.evidence?.heatmap) return;
        const heatmap = decodeGray(await this.api.file(this.studyId, disc.evidence.heatmap));
        this.overlay.heatmaps.set(disc.level, heatmapLayer(heatmap));
      }),
    );
    this.overlayCanvas.dataset.layers = 'loaded';
    this.refreshToggles();
    this.redraw();
  }

  private toolbar(): HTMLElement {
    const toggle = (key: keyof OverlayContent['show'], label: string, shortcut: string) =>
      h(
        'button',
        {
          className: 'toggle',
          'data-overlay': key,
          title: `${label} (${shortcut})`,
          onclick: () => this.toggleOverlay(key),
        },
        label,
        h('kbd', {}, shortcut),
      );
    return h(
      'div',
      { className: 'toolbar' },
      h(
        'div',
        { className: 'group' },
        h('span', { className: 'group-label' }, 'Overlays'),
        toggle('boxes', 'Levels', 'L'),
        toggle('mask', 'Mask', 'M'),
        toggle('heatmap', 'Heatmap', 'G'),
      ),
      h(
        'div',
        { className: 'group' },
        h('span', { className: 'group-label' }, 'Window'),
        ...Object.keys(WINDOW_PRESETS).map((name) =>
          h('button', { 'data-preset': name, onclick: () => this.stack?.applyPreset(name) }, name),
        ),
      ),
      h(
        'div',
        { className: 'group' },
        h('span', { className: 'group-label' }, 'View'),
        h('button', { title: 'Zoom in (+)', onclick: () => this.stack?.zoomBy(1.25) }, '+'),
        h('button', { title: 'Zoom out (−)', onclick: () => this.stack?.zoomBy(0.8) }, '−'),
        h('button', { title: 'Reset view (Z)', onclick: () => this.stack?.reset() }, 'Reset'),
        h('button', { title: 'Open the report', onclick: () => void this.openReport() }, 'Report'),
      ),
    );
  }

  private footer(): HTMLElement {
    const legend = Object.entries(LABEL_COLOURS).map(([name, [r, g, b]]) =>
      h(
        'span',
        { className: 'legend-item', 'data-label': name, 'data-color': `${r},${g},${b}`, 'data-alpha': MASK_ALPHA },
        h('i', { style: `background:rgb(${r},${g},${b})` }),
        name.replace('_', ' '),
      ),
    );
    return h(
      'div',
      { className: 'viewer-footer' },
      this.sliceLine,
      this.cacheLine,
      h('span', { className: 'legend' }, ...legend),
      h('span', { className: 'hint' }, 'drag: window/level · right drag: zoom · middle or Ctrl+drag: pan · wheel: slices'),
    );
  }

  private async openReport(): Promise<void> {
    const html = await this.api.file(this.studyId, 'report.html');
    const url = URL.createObjectURL(new Blob([html], { type: 'text/html' }));
    window.open(url, '_blank', 'noopener');
  }

  private toggleOverlay(key: keyof OverlayContent['show']): void {
    const layer = key === 'mask' ? this.overlay.mask : key === 'heatmap' ? this.overlay.heatmaps.size : true;
    if (!layer) {
      if (this.overlayCanvas.dataset.layers !== 'loaded') this.say('The overlays are still loading.');
      else this.say(key === 'heatmap' ? 'This analysis has no heatmaps.' : 'This analysis has no mask.');
      return;
    }
    this.overlay.show[key] = !this.overlay.show[key];
    this.refreshToggles();
    this.redraw();
  }

  private refreshToggles(): void {
    for (const button of this.element.querySelectorAll<HTMLButtonElement>('button[data-overlay]')) {
      const key = button.dataset.overlay as keyof OverlayContent['show'];
      const available = key === 'boxes' || Boolean(key === 'mask' ? this.overlay.mask : this.overlay.heatmaps.size);
      button.classList.toggle('on', this.overlay.show[key]);
      button.setAttribute('aria-pressed', String(this.overlay.show[key]));
      button.disabled = !available;
    }
  }

  private redraw(): void {
    const stack = this.stack;
    if (!stack || !this.slices) return;
    const onAnalysedSlice = stack.index === this.slices.analysed_index;
    this.sliceLine.textContent = `slice ${stack.index + 1} / ${stack.count}${onAnalysedSlice ? ' · analysed' : ` · findings on ${this.slices.analysed_index + 1} (Home)`}`;
    this.sliceLine.dataset.index = String(stack.index);
    this.overlayCanvas.dataset.visible = Object.entries(this.overlay.show)
      .filter(([key, on]) => on && onAnalysedSlice && (key === 'boxes' || (key === 'mask' ? this.overlay.mask : this.overlay.heatmaps.size)))
      .map(([key]) => key)
      .join(' ');
    const transform = stack.imageToCanvas();
    if (!transform) return;
    this.overlay.selectedLevel = this.review?.disc?.level ?? null;
    // The findings belong to the analysed slice only; other slices show the image alone.
    const show = onAnalysedSlice ? this.overlay.show : { boxes: false, mask: false, heatmap: false };
    drawOverlays(this.overlayCanvas, transform, { ...this.overlay, show });
  }

  private renderPanel(): void {
    const review = this.review;
    const findings = this.findings;
    if (!review || !findings) return;
    this.progressLine.textContent = `${review.decidedCount} / ${review.totalCount} findings decided`;
    const pendingCount = review.pending.size;
    const levels = findings.discs.map((disc, level) => {
      const selected = level === review.level;
      const rows = (selected ? review.kinds(level) : []).map((kind, index) => {
        const id = findingId(disc.level, kind);
        const state = review.stateOf(id);
        const pending = review.pending.get(id);
        const value = review.value(id);
        const decided = Boolean(state?.decided);
        const rejected = pending ? pending.action === 'reject' : decided && state?.current_value === null;
        const classes = ['finding'];
        if (index === review.finding) classes.push('cursor');
        if (pending) classes.push('pending');
        if (decided) classes.push('decided');
        return h(
          'li',
          {
            className: classes.join(' '),
            'data-finding': id,
            'data-value': JSON.stringify(value),
            'data-source': state?.source ?? 'model',
            'data-decided': String(decided),
            onclick: () => {
              review.select(id);
              this.afterCursorMove();
            },
          },
          h('span', { className: 'name' }, FINDING_NAMES[kind] ?? kind),
          h('span', { className: 'value' }, formatValue(kind, rejected ? null : value, rejected || decided)),
          h('span', { className: 'probability' }, modelText(disc, kind)),
          h(
            'span',
            { className: `source ${pending ? 'pending' : state?.source ?? 'model'}` },
            pending ? `${pending.action} · unsaved` : decided ? `${state?.source === 'person' ? 'person' : 'accepted'}` : 'model',
          ),
          probabilityBars(disc, kind, value),
        );
      });
      const levelIds = review.kinds(level).map((kind) => findingId(disc.level, kind));
      const levelDecided = levelIds.filter((id) => review.stateOf(id)?.decided).length;
      return h(
        'section',
        { className: selected ? 'level selected' : 'level', 'data-level': disc.level },
        h(
          'h3',
          {
            onclick: () => {
              review.level = level;
              this.afterCursorMove();
            },
          },
          h('span', {}, disc.level),
          h('small', {}, `${levelDecided}/${levelIds.length}`),
        ),
        selected ? h('ul', {}, ...rows) : null,
        selected ? measurementRows(disc) : null,
        selected && disc.evidence?.finding ? h('p', { className: 'evidence' }, `Heatmap explains: ${FINDING_NAMES[disc.evidence.finding] ?? disc.evidence.finding}`) : null,
      );
    });
    this.panel.replaceChildren(
      h(
        'div',
        { className: 'panel-head' },
        h('h2', {}, 'Findings'),
        h('span', { className: pendingCount ? 'unsaved on' : 'unsaved' }, pendingCount ? `${pendingCount} unsaved · Enter saves` : 'all saved'),
      ),
      levels.length
        ? h('div', { className: 'levels' }, ...levels)
        : h('p', { className: 'empty' }, 'No disc was found on the analysed slice.'),
      h('p', { className: 'model' }, `${findings.model.name} ${findings.model.version}`),
      h('details', { className: 'keymap' }, h('summary', {}, 'Keyboard'), h('dl', {}, ...KEYMAP.flatMap(([key, what]) => [h('dt', {}, h('kbd', {}, key)), h('dd', {}, what)]))),
    );
    this.panel.querySelector('.cursor')?.scrollIntoView({ block: 'nearest' });
  }

  private afterCursorMove(): void {
    this.renderPanel();
    this.redraw();
  }

  private async save(): Promise<void> {
    const review = this.review;
    if (!review) return;
    const decisions = review.takePending();
    if (decisions.length) {
      try {
        await this.api.saveReviews(this.studyId, decisions);
      } catch (error) {
        decisions.forEach((decision) => review.pending.set(decision.finding, decision));
        this.say(`Not saved: ${(error as Error).message}`, 'error');
        this.renderPanel();
        return;
      }
      review.setState((await this.api.state(this.studyId)).findings);
      this.say(`Saved ${decisions.length} decision${decisions.length === 1 ? '' : 's'}.`);
    }
    if (!review.moveToNextUndecided()) this.say('Every finding of this study has a decision.');
    this.afterCursorMove();
  }

  private onKey(event: KeyboardEvent): void {
    const review = this.review;
    const stack = this.stack;
    if (!review || !stack || event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.target instanceof HTMLInputElement || event.target instanceof HTMLTextAreaElement) return;
    const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
    let handled = true;
    if (key === 'ArrowUp' || key === 'ArrowDown') review.moveLevel(key === 'ArrowUp' ? -1 : 1);
    else if (key === 'ArrowLeft' || key === 'ArrowRight') review.moveFinding(key === 'ArrowLeft' ? -1 : 1);
    else if (key === 'a') review.accept();
    else if (key === 'r') review.reject();
    else if (key >= '1' && key <= '5') {
      if (!review.correct('pfirrmann', Number(key))) this.say('This level has no Pfirrmann grade.');
    } else if (key in TOGGLE_KEYS) {
      if (!review.toggle(TOGGLE_KEYS[key])) this.say(`This level has no ${TOGGLE_KEYS[key]} finding.`);
    } else if (key === 'Enter') void this.save();
    else if (key === 'l') this.toggleOverlay('boxes');
    else if (key === 'm') this.toggleOverlay('mask');
    else if (key === 'g') this.toggleOverlay('heatmap');
    else if (key === 'PageUp' || key === 'PageDown') void stack.goTo(stack.index + (key === 'PageUp' ? -1 : 1));
    else if (key === 'Home' && this.slices) void stack.goTo(this.slices.analysed_index);
    else if (key === '+' || key === '=') stack.zoomBy(1.25);
    else if (key === '-') stack.zoomBy(0.8);
    else if (key === 'z') stack.reset();
    else handled = false;
    if (!handled) return;
    event.preventDefault();
    if (key !== 'Enter') this.afterCursorMove();
  }
}
