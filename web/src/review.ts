// The review of one study: its findings ("<level>:<finding>"), the stored state of each, the
// decisions made since the last save, and the keyboard cursor (a level and a finding in it).
import type { Decision, Disc, FindingState, FindingValue, Grade, OrdinalGrade } from './api';

/** The order findings are listed and walked in; grades the analysis adds later follow these. */
const FINDING_ORDER = [
  'disc',
  'pfirrmann',
  'herniation',
  'bulging',
  'narrowing',
  'stenosis',
  'modic',
  'up_endplate',
  'low_endplate',
  'spondylolisthesis',
];

/** Keys that toggle a yes/no finding of the selected level. */
export const TOGGLE_KEYS: Record<string, string> = { h: 'herniation', b: 'bulging', n: 'narrowing', s: 'stenosis' };

export const FINDING_NAMES: Record<string, string> = {
  disc: 'Disc detected',
  pfirrmann: 'Pfirrmann grade',
  herniation: 'Herniation',
  bulging: 'Bulging',
  narrowing: 'Narrowing',
  stenosis: 'Stenosis',
  modic: 'Modic type',
  up_endplate: 'Upper endplate defect',
  low_endplate: 'Lower endplate defect',
  spondylolisthesis: 'Spondylolisthesis',
};

export function isOrdinal(grade: Grade | undefined): grade is OrdinalGrade {
  return grade !== undefined && 'grade' in grade;
}

export function findingKinds(disc: Disc): string[] {
  const kinds = ['disc', ...Object.keys(disc.grades)];
  const rank = (kind: string) => {
    const at = FINDING_ORDER.indexOf(kind);
    return at < 0 ? FINDING_ORDER.length : at;
  };
  return kinds.sort((a, b) => rank(a) - rank(b));
}

export function findingId(level: string, kind: string): string {
  return `${level}:${kind}`;
}

export class Review {
  readonly pending = new Map<string, Decision>();
  private state = new Map<string, FindingState>();
  level = 0;
  finding = 0;

  constructor(readonly discs: Disc[]) {}

  setState(findings: FindingState[]): void {
    this.state = new Map(findings.map((finding) => [finding.finding, finding]));
  }

  stateOf(id: string): FindingState | undefined {
    return this.state.get(id);
  }

  get disc(): Disc | undefined {
    return this.discs[this.level];
  }

  kinds(level = this.level): string[] {
    const disc = this.discs[level];
    return disc ? findingKinds(disc) : [];
  }

  get currentId(): string | null {
    const disc = this.disc;
    const kind = this.kinds()[this.finding];
    return disc && kind ? findingId(disc.level, kind) : null;
  }

  /** The value shown for a finding: a pending decision's, else the stored current value. */
  value(id: string): FindingValue {
    const pending = this.pending.get(id);
    if (pending) return pending.action === 'correct' ? pending.value : this.stateOf(id)?.current_value ?? null;
    return this.stateOf(id)?.current_value ?? null;
  }

  /** Every finding in walking order (levels top to bottom, findings in panel order). */
  private allIds(): Array<[number, number, string]> {
    const ids: Array<[number, number, string]> = [];
    this.discs.forEach((disc, level) =>
      findingKinds(disc).forEach((kind, finding) => ids.push([level, finding, findingId(disc.level, kind)])),
    );
    return ids;
  }

  get decidedCount(): number {
    return this.allIds().filter(([, , id]) => this.stateOf(id)?.decided).length;
  }

  get totalCount(): number {
    return this.allIds().length;
  }

  moveLevel(step: number): void {
    if (this.discs.length === 0) return;
    this.level = Math.max(0, Math.min(this.discs.length - 1, this.level + step));
    this.finding = Math.min(this.finding, this.kinds().length - 1);
  }

  moveFinding(step: number): void {
    this.finding = Math.max(0, Math.min(this.kinds().length - 1, this.finding + step));
  }

  select(id: string): void {
    for (const [level, finding, candidate] of this.allIds()) {
      if (candidate === id) {
        this.level = level;
        this.finding = finding;
      }
    }
  }

  /** Moves the cursor to the first undecided finding after it (or from it), wrapping; false when none is left. */
  moveToNextUndecided(includeCurrent = false): boolean {
    const ids = this.allIds();
    const here = ids.findIndex(([level, finding]) => level === this.level && finding === this.finding);
    for (let step = includeCurrent ? 0 : 1; step <= ids.length; step++) {
      const [level, finding, id] = ids[(here + step) % ids.length];
      if (!this.stateOf(id)?.decided && !this.pending.has(id)) {
        this.level = level;
        this.finding = finding;
        return true;
      }
    }
    return false;
  }

  private decide(id: string, action: Decision['action'], value: FindingValue): void {
    this.pending.set(id, { finding: id, action, value, comment: null });
  }

  accept(): void {
    const id = this.currentId;
    if (id) this.decide(id, 'accept', this.value(id));
  }

  reject(): void {
    const id = this.currentId;
    if (id) this.decide(id, 'reject', null);
  }

  /** Sets a finding of the selected level to a value (1–5 for Pfirrmann); false if the level has none. */
  correct(kind: string, value: FindingValue): boolean {
    const disc = this.disc;
    if (!disc || !this.kinds().includes(kind)) return false;
    const id = findingId(disc.level, kind);
    this.decide(id, 'correct', value);
    this.finding = this.kinds().indexOf(kind);
    return true;
  }

  /** Flips a yes/no finding of the selected level; false if the level has none. */
  toggle(kind: string): boolean {
    const disc = this.disc;
    if (!disc) return false;
    return this.correct(kind, !this.value(findingId(disc.level, kind)));
  }

  takePending(): Decision[] {
    const decisions = [...this.pending.values()];
    this.pending.clear();
    return decisions;
  }
}
