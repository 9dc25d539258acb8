// Submitting a job: the spec's fields, checked by the server's ValidateJob before CreateJob; an error shows next
// to the field the server names. The draft survives a reload (sessionStorage), with its request id, so
// submitting again after a lost answer returns the same job instead of a second one.
import { ApiError } from '../api.js';
import { el, replace } from '../dom.js';

const DRAFT_KEY = 'llmc.submitDraft';

/** The form's inputs: [id, label, spec field the server names, input attributes, help]. */
const FIELDS = /** @type {const} */ ([
  ['model', 'Model', 'spec.model_uri', { required: true, placeholder: '/models/llama or s3://bucket/llama' }, 'Hugging Face model directory'],
  ['output', 'Output', 'spec.output_uri', { required: true, placeholder: '/srv/llmc/llama-w4a16' }, 'where the checkpoint goes; must not exist'],
  ['scheme', 'Scheme', 'spec.preset.scheme', { list: 'schemes', placeholder: 'W4A16' }, ''],
  ['algorithm', 'Algorithm', 'spec.preset.algorithm', { list: 'algorithms', placeholder: 'rtn' }, ''],
  ['dataset', 'Calibration data', 'spec.calibration.dataset_uri', { placeholder: '/data/calib.txt (calibrated methods)' }, 'text or JSONL'],
  ['samples', 'Samples', 'spec.calibration.num_samples', { type: 'number', min: 0, placeholder: '128' }, '0: 128'],
  ['seqlen', 'Sequence length', 'spec.calibration.seq_len', { type: 'number', min: 0, placeholder: '512' }, 'tokens; 0: 512'],
  ['evaltext', 'Perplexity text', 'spec.eval_text_uri', { placeholder: '/data/eval.txt (optional)' }, 'perplexity before/after in the report'],
  ['gpus', 'GPUs', 'spec.gpus', { type: 'number', min: 0, placeholder: '1' }, 'workers the job runs on'],
  ['priority', 'Priority', 'spec.priority', { type: 'number', placeholder: '0' }, 'higher runs first'],
  ['labels', 'Labels', 'spec.labels', { placeholder: 'team=a, run=nightly' }, 'key=value, comma-separated'],
]);

/**
 * @param {import('../app.js').Ctx} ctx
 * @returns {import('../app.js').View}
 */
export function render(ctx) {
  if (!ctx.me.canSubmit) {
    return {
      el: el('section', { class: 'card narrow', id: 'submit-denied' }, el('h2', {}, 'Submit a job'),
        el('p', {}, `Your role (${ctx.me.role}) may read jobs but not submit them. Ask for a submitter token.`)),
    };
  }
  /** @type {{[k: string]: any}} */
  const draft = JSON.parse(sessionStorage.getItem(DRAFT_KEY) || '{}');
  if (!draft.requestId) draft.requestId = crypto.randomUUID();
  const save = () => sessionStorage.setItem(DRAFT_KEY, JSON.stringify(draft));

  /** @type {{[id: string]: HTMLInputElement}} */
  const inputs = {};
  /** @type {{[id: string]: HTMLElement}} */
  const errors = {};
  /** @type {{[field: string]: string}} spec field -> input id */
  const byField = {};

  /**
   * @param {string} id
   * @param {string} label
   * @param {HTMLElement} input
   * @param {string} help
   */
  function row(id, label, input, help) {
    errors[id] = el('div', { class: 'field-error', id: `err-${id}`, role: 'alert' });
    return el('div', { class: 'field', 'data-field': id }, el('label', { for: `f-${id}` }, label), input,
      help ? el('div', { class: 'help' }, help) : '', errors[id]);
  }

  const fieldRows = FIELDS.map(([id, label, field, attrs, help]) => {
    const input = /** @type {HTMLInputElement} */ (el('input', { id: `f-${id}`, name: id, autocomplete: 'off', ...attrs }));
    input.value = draft[id] ?? '';
    input.addEventListener('input', () => { draft[id] = input.value; save(); replace(errors[id]); });
    inputs[id] = input;
    byField[field] = id;
    return row(id, label, input, help);
  });
  byField['spec.preset'] = 'scheme';
  byField['spec.calibration'] = 'dataset';
  byField['spec.min_gpus'] = 'gpus';
  byField['spec.recipe_yaml'] = 'recipe';

  // Method: a preset (scheme + algorithm) or an llm-compressor recipe file.
  const mode = draft.mode === 'recipe' ? 'recipe' : 'preset';
  const radio = (/** @type {string} */ v, /** @type {string} */ text) => el('label', { class: 'inline' },
    el('input', { type: 'radio', name: 'mode', value: v, id: `mode-${v}`, checked: mode === v, onchange: () => { draft.mode = v; save(); showMode(); } }), text);
  const recipeFile = /** @type {HTMLInputElement} */ (el('input', { type: 'file', id: 'f-recipe', accept: '.yaml,.yml,text/yaml' }));
  const recipeInfo = el('div', { class: 'help', id: 'recipe-info' }, draft.recipeName ? `${draft.recipeName} (${draft.recipe.length} bytes)` : 'an llm-compressor recipe (YAML)');
  recipeFile.addEventListener('change', async () => {
    const f = recipeFile.files && recipeFile.files[0];
    if (!f) return;
    if (f.size > 256 * 1024) {
      replace(errors.recipe, `${f.name}: ${f.size} bytes, more than the 256 KiB a recipe may have`);
      return;
    }
    draft.recipe = await f.text();
    draft.recipeName = f.name;
    save();
    replace(errors.recipe);
    replace(recipeInfo, `${f.name} (${draft.recipe.length} bytes)`);
  });
  const recipeRow = row('recipe', 'Recipe file', recipeFile, '');
  recipeRow.insertBefore(recipeInfo, errors.recipe);
  const presetRows = [fieldRows[2], fieldRows[3]];
  function showMode() {
    const recipe = draft.mode === 'recipe';
    for (const r of presetRows) r.hidden = recipe;
    recipeRow.hidden = !recipe;
  }

  const formError = el('div', { class: 'field-error', id: 'form-error', role: 'alert' });
  const result = el('div', { id: 'validate-result' });
  const schemes = el('datalist', { id: 'schemes' });
  const algorithms = el('datalist', { id: 'algorithms' });
  ctx.api.methods().then((m) => {
    replace(schemes, (m.presets || []).map((/** @type {any} */ p) => el('option', { value: p.name }, p.description)));
    replace(algorithms, [...(m.algorithms || []).map((/** @type {any} */ a) => el('option', { value: a.name }, a.summary)),
      el('option', { value: 'smoothquant+gptq' }, 'SmoothQuant, then GPTQ')]);
  }).catch(() => {});

  const validateBtn = el('button', { type: 'button', id: 'validate' }, 'Validate');
  const submitBtn = el('button', { type: 'submit', class: 'primary', id: 'submit' }, 'Submit');
  const form = el('form', { id: 'submit-form', class: 'card', novalidate: true },
    el('h2', {}, 'Submit a job'),
    fieldRows[0], fieldRows[1],
    el('div', { class: 'field' }, el('span', { class: 'label' }, 'Method'), el('div', {}, radio('preset', 'Preset'), radio('recipe', 'Recipe file'))),
    presetRows, recipeRow,
    fieldRows.slice(4),
    schemes, algorithms,
    el('div', { class: 'actions' }, validateBtn, submitBtn), formError, result);
  showMode();

  /** @returns {{spec: any, ok: boolean}} */
  function buildSpec() {
    /** @type {any} */
    const spec = { modelUri: inputs.model.value.trim(), outputUri: inputs.output.value.trim() };
    let ok = true;
    if (draft.mode === 'recipe') {
      if (!draft.recipe) {
        replace(errors.recipe, 'choose a recipe file');
        ok = false;
      }
      spec.recipeYaml = draft.recipe || '';
    } else {
      spec.preset = { scheme: inputs.scheme.value.trim(), algorithm: inputs.algorithm.value.trim() };
    }
    const cal = { datasetUri: inputs.dataset.value.trim(), numSamples: Number(inputs.samples.value || 0), seqLen: Number(inputs.seqlen.value || 0) };
    if (cal.datasetUri || cal.numSamples || cal.seqLen) spec.calibration = cal;
    if (inputs.evaltext.value.trim()) spec.evalTextUri = inputs.evaltext.value.trim();
    spec.gpus = Number(inputs.gpus.value || 0);
    spec.priority = Number(inputs.priority.value || 0);
    /** @type {{[k: string]: string}} */
    const labels = {};
    for (const part of inputs.labels.value.split(',').map((s) => s.trim()).filter(Boolean)) {
      const eq = part.indexOf('=');
      if (eq <= 0) {
        replace(errors.labels, `"${part}": write labels as key=value`);
        ok = false;
        continue;
      }
      labels[part.slice(0, eq).trim()] = part.slice(eq + 1).trim();
    }
    spec.labels = labels;
    return { spec, ok };
  }

  function clearErrors() {
    for (const e of Object.values(errors)) replace(e);
    replace(formError);
    replace(result);
  }

  /** @param {unknown} e */
  function showFieldError(e) {
    if (!(e instanceof ApiError)) return replace(formError, String(e));
    // The longest spec field the server named that the form has ("spec.preset.scheme" before "spec.preset").
    let f = e.field;
    while (f && !byField[f]) f = f.includes('.') ? f.slice(0, f.lastIndexOf('.')) : '';
    if (f) {
      replace(errors[byField[f]], e.message);
      const input = inputs[byField[f]] || recipeFile;
      input.setAttribute('aria-invalid', 'true');
      input.focus();
    } else {
      replace(formError, e.status === 0 ? e.message : `${e.code}: ${e.message}`);
    }
  }

  async function validate() {
    clearErrors();
    for (const i of Object.values(inputs)) i.removeAttribute('aria-invalid');
    const { spec, ok } = buildSpec();
    if (!ok) return null;
    try {
      const v = await ctx.api.validate(spec);
      replace(result, el('div', { class: 'ok', id: 'validate-ok' }, `Valid: ${v.method}`,
        v.needsCalibration ? ' (calibrated)' : ' (data-free)'),
      (v.warnings || []).map((/** @type {string} */ w) => el('div', { class: 'warning' }, w)));
      return spec;
    } catch (e) {
      showFieldError(e);
      return null;
    }
  }

  validateBtn.addEventListener('click', validate);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    submitBtn.setAttribute('disabled', '');
    try {
      const spec = await validate();
      if (!spec) return;
      const job = await ctx.api.create(draft.requestId, spec);
      sessionStorage.removeItem(DRAFT_KEY);
      ctx.navigate(`/jobs/${job.id}`);
    } catch (e) {
      if (e instanceof ApiError && e.code === 'ALREADY_EXISTS') {
        // This draft's request id made a job with a different spec before (an answer that was lost, then an
        // edit): submitting again makes a new job.
        draft.requestId = crypto.randomUUID();
        save();
      }
      showFieldError(e);
    } finally {
      submitBtn.removeAttribute('disabled');
    }
  });
  save();
  return { el: form };
}
