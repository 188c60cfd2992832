// The page: the token (and reviewer name) form, the study list with upload, and one study at #/study/<id>.
import './style.css';
import { Api, ApiError, clearSession, loadSession, saveSession, type Session, type StudySummary } from './api';
import { h, percent } from './dom';
import { registerSliceLoader } from './loader';
import { StudyView } from './study';

const LIST_POLL_MS = 1500;
const app = document.getElementById('app')!;
let leave: () => void = () => undefined;

function shell(session: Session, content: HTMLElement): HTMLElement {
  return h(
    'div',
    { className: 'shell' },
    h(
      'header',
      { className: 'topbar' },
      h('a', { className: 'brand', href: '#/' }, h('span', { className: 'logo' }, 'S'), 'spinedx', h('small', {}, 'review')),
      h('span', { className: 'note' }, 'Research use only — not a medical device'),
      h(
        'span',
        { className: 'who' },
        h('span', { 'data-testid': 'reviewer' }, session.reviewer),
        h(
          'button',
          {
            className: 'ghost',
            onclick: () => {
              clearSession();
              location.hash = '#/';
              location.reload();
            },
          },
          'Sign out',
        ),
      ),
    ),
    h('main', {}, content),
  );
}

function loginForm(): HTMLElement {
  const token = h('input', { name: 'token', type: 'password', required: true, autocomplete: 'off', placeholder: 'SPINEDX_TOKEN of the server' });
  const reviewer = h('input', { name: 'reviewer', required: true, placeholder: 'e.g. Dr. A. Radiologist' });
  const error = h('p', { className: 'form-error', role: 'alert' });
  const form = h(
    'form',
    {
      className: 'login',
      onsubmit: async (event: Event) => {
        event.preventDefault();
        const session = { token: token.value.trim(), reviewer: reviewer.value.trim() };
        try {
          await new Api(session).studies();
        } catch (failure) {
          error.textContent = failure instanceof ApiError && failure.status === 401 ? 'The server refused this token.' : String(failure);
          return;
        }
        saveSession(session);
        start(session);
      },
    },
    h('h1', {}, h('span', { className: 'logo' }, 'S'), 'spinedx review'),
    h('p', { className: 'lead' }, 'Spine MRI findings, checked by a person. The token stays in this tab only.'),
    h('label', {}, 'Access token', token),
    h('label', {}, 'Your name (stored with every decision)', reviewer),
    error,
    h('button', { type: 'submit', className: 'primary' }, 'Start reviewing'),
  );
  return form;
}

function studyRow(study: StudySummary): HTMLElement {
  const decided = study.findings_total ? study.findings_decided / study.findings_total : 0;
  const open = () => (location.hash = `#/study/${encodeURIComponent(study.id)}`);
  return h(
    'tr',
    { 'data-study': study.id, 'data-status': study.status, className: study.status === 'done' ? 'openable' : '', onclick: study.status === 'done' ? open : undefined },
    h('td', { className: 'name' }, study.name, study.task ? h('small', {}, study.task) : null),
    h(
      'td',
      {},
      h('span', { className: `badge ${study.status}` }, study.status),
      study.status === 'running' ? h('progress', { max: 1, value: study.progress }) : null,
      study.error ? h('small', { className: 'error-text' }, study.error) : null,
    ),
    h(
      'td',
      { className: 'review-progress' },
      study.findings_total
        ? h('span', {}, h('meter', { min: 0, max: 1, value: decided }), ` ${study.findings_decided}/${study.findings_total}`)
        : '—',
      study.reviewed ? h('span', { className: 'badge reviewed' }, 'reviewed') : null,
    ),
    h('td', { className: 'created' }, new Date(study.created).toLocaleString()),
    h('td', {}, study.status === 'done' ? h('button', { onclick: open }, study.reviewed ? 'Open' : `Review ${percent(decided)}`) : null),
  );
}

function studyList(api: Api): HTMLElement {
  const body = h('tbody');
  const note = h('p', { className: 'upload-note', role: 'status' });
  const input = h('input', {
    type: 'file',
    'data-testid': 'upload',
    accept: '.png,.jpg,.jpeg,.dcm,.zip,.nii,.gz,.mha,application/dicom',
    onchange: async () => {
      const file = input.files?.[0];
      if (!file) return;
      note.textContent = `Uploading ${file.name}…`;
      try {
        await api.upload(file);
        note.textContent = `${file.name} queued for analysis.`;
      } catch (failure) {
        note.textContent = `Upload refused: ${(failure as Error).message}`;
      }
      input.value = '';
      void refresh();
    },
  });
  let timer = 0;
  let stopped = false;
  const refresh = async () => {
    window.clearTimeout(timer);
    try {
      const studies = await api.studies();
      if (stopped) return;
      body.replaceChildren(
        ...(studies.length ? studies.map(studyRow) : [h('tr', {}, h('td', { colspan: 5, className: 'empty' }, 'No studies yet: upload a slice, a DICOM file or series (zip), NIfTI or MetaImage.'))]),
      );
    } catch (failure) {
      note.textContent = `Could not list studies: ${(failure as Error).message}`;
    }
    if (!stopped) timer = window.setTimeout(refresh, LIST_POLL_MS);
  };
  leave = () => {
    stopped = true;
    window.clearTimeout(timer);
  };
  void refresh();
  return h(
    'section',
    { className: 'studies' },
    h(
      'div',
      { className: 'studies-head' },
      h('h2', {}, 'Studies'),
      h('label', { className: 'button primary' }, 'Upload study', input),
    ),
    note,
    h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, 'Study'), h('th', {}, 'Analysis'), h('th', {}, 'Review'), h('th', {}, 'Uploaded'), h('th'))), body),
  );
}

function route(session: Session, api: Api): void {
  leave();
  const match = /^#\/study\/(.+)$/.exec(location.hash);
  if (match) {
    const view = new StudyView(api, decodeURIComponent(match[1]), () => (location.hash = '#/'));
    leave = () => view.close();
    app.replaceChildren(shell(session, view.element));
  } else {
    app.replaceChildren(shell(session, studyList(api)));
  }
}

function start(session: Session): void {
  const api = new Api(session);
  registerSliceLoader(api);
  window.addEventListener('hashchange', () => route(session, api));
  route(session, api);
}

const session = loadSession();
if (session) start(session);
else app.replaceChildren(h('div', { className: 'login-page' }, loginForm()));
