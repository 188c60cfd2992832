// The review service's JSON API (see the contract in src/spinedx/serve): every call carries the token
// as a Bearer header, so the page needs no cookies and forms cannot be forged cross-site.

const TOKEN_KEY = 'spinedx.token';
const REVIEWER_KEY = 'spinedx.reviewer';

export interface Session {
  token: string;
  reviewer: string;
}

export function loadSession(): Session | null {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const reviewer = sessionStorage.getItem(REVIEWER_KEY);
  return token && reviewer ? { token, reviewer } : null;
}

export function saveSession(session: Session): void {
  sessionStorage.setItem(TOKEN_KEY, session.token);
  sessionStorage.setItem(REVIEWER_KEY, session.reviewer);
}

export function clearSession(): void {
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(REVIEWER_KEY);
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export type StudyStatus = 'queued' | 'running' | 'done' | 'failed';

export interface StudySummary {
  id: string;
  name: string;
  task: string | null;
  status: StudyStatus;
  progress: number;
  error: string | null;
  created: string;
  findings_total: number;
  findings_decided: number;
  reviewed: boolean;
}

export interface Study {
  id: string;
  name: string;
  task: string | null;
  status: StudyStatus;
  progress: number;
  error: string | null;
}

export interface SliceInfo {
  count: number;
  analysed_index: number;
  width: number;
  height: number;
  pixel_spacing_mm: [number, number] | null;
}

export interface ProbabilityGrade {
  probability: number;
}

export interface OrdinalGrade {
  grade: number;
  probabilities: number[];
}

export type Grade = ProbabilityGrade | OrdinalGrade;

export interface Disc {
  level: string;
  box: [number, number, number, number];
  score: number;
  grades: Record<string, Grade>;
  measurements: Record<string, number | string | null>;
  evidence?: { heatmap: string; finding?: string } | null;
}

export interface Findings {
  input: { width: number; height: number; pixel_spacing_mm: [number, number] | null };
  model: { name: string; version: string };
  discs: Disc[];
  masks?: string;
  mask_labels?: string;
}

export type FindingValue = number | boolean | null;

export interface FindingState {
  finding: string;
  model_value: FindingValue;
  current_value: FindingValue;
  source: 'model' | 'person';
  decided: boolean;
  reviewers: string[];
}

export type Action = 'accept' | 'reject' | 'correct';

export interface Decision {
  finding: string;
  action: Action;
  value: FindingValue;
  comment: string | null;
}

export class Api {
  constructor(private readonly session: Session) {}

  private async request(path: string, init: RequestInit = {}): Promise<Response> {
    const headers = new Headers(init.headers);
    headers.set('Authorization', `Bearer ${this.session.token}`);
    const response = await fetch(path, { ...init, headers });
    if (!response.ok) {
      let detail = response.statusText;
      try {
        const body = await response.json();
        detail = typeof body.detail === 'string' ? body.detail : JSON.stringify(body.detail);
      } catch {
        // a non-JSON error body: the status text says enough
      }
      throw new ApiError(response.status, detail);
    }
    return response;
  }

  private async json<T>(path: string, init?: RequestInit): Promise<T> {
    return (await this.request(path, init)).json() as Promise<T>;
  }

  studies(): Promise<StudySummary[]> {
    return this.json('/api/studies');
  }

  study(id: string): Promise<Study> {
    return this.json(`/api/studies/${encodeURIComponent(id)}`);
  }

  upload(file: File): Promise<{ id: string }> {
    const form = new FormData();
    form.append('file', file);
    return this.json('/api/studies', { method: 'POST', body: form });
  }

  slices(id: string): Promise<SliceInfo> {
    return this.json(`/api/studies/${encodeURIComponent(id)}/slices`);
  }

  findings(id: string): Promise<Findings> {
    return this.json(`/api/studies/${encodeURIComponent(id)}/findings`);
  }

  state(id: string): Promise<{ findings: FindingState[] }> {
    return this.json(`/api/studies/${encodeURIComponent(id)}/state`);
  }

  saveReviews(id: string, decisions: Decision[]): Promise<{ saved: number }> {
    return this.json(`/api/studies/${encodeURIComponent(id)}/reviews`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ reviewer: this.session.reviewer, decisions }),
    });
  }

  /** A file of the study's result folder (mask, heatmap, report), as bytes. */
  async file(id: string, relativePath: string): Promise<ArrayBuffer> {
    const encoded = relativePath.split('/').map(encodeURIComponent).join('/');
    return (await this.request(`/api/studies/${encodeURIComponent(id)}/files/${encoded}`)).arrayBuffer();
  }

  /** Bytes of any API path (the slice loader fetches PNG slices through this). */
  async bytes(path: string, signal?: AbortSignal): Promise<ArrayBuffer> {
    return (await this.request(path, { signal })).arrayBuffer();
  }
}
