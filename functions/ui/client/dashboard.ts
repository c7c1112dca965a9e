/**
 * The dashboard's browser side, bundled with uPlot by scripts/build-ui.mjs into functions/ui/assets.generated.ts.
 * The server renders every view; this script only fetches the views' HTML fragments with the token the user
 * pasted (kept in localStorage), swaps them in on a timer, posts the buttons' actions, follows a job's output
 * through the logs API and draws the utilization chart and the usage page's charts.
 */
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import './dashboard.css';
import { initAccounts } from './accounts.ts';
import { reservationsRange } from './reservations.ts';

const TOKEN_KEY = 'conductor-token';
const $ = (id: string) => document.getElementById(id);

class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}

const token = () => localStorage.getItem(TOKEN_KEY) ?? '';

async function api(path: string, init: RequestInit = {}): Promise<Response> {
  const headers: Record<string, string> = { accept: 'application/json, text/html' };
  if (token()) headers.authorization = `Bearer ${token()}`;
  if (init.method === 'POST') headers['content-type'] = 'application/json';
  const res = await fetch(path, { ...init, headers });
  if (res.status === 401) {
    const box = $('token-box');
    if (box) box.hidden = false;
    throw new ApiError('A token is needed (see above)', 401);
  }
  if (!res.ok) {
    const body = (await res.json().catch(() => ({}))) as { error?: { message?: string } };
    throw new ApiError(body.error?.message ?? res.statusText, res.status);
  }
  return res;
}

function showError(error: unknown) {
  const line = $('error');
  if (line) line.textContent = error instanceof Error ? error.message : String(error);
}

/** Dates come as ISO UTC; the browser's locale shows them with its time zone (the ISO stays as a tooltip). */
function localizeTimes(root: ParentNode) {
  for (const t of root.querySelectorAll<HTMLTimeElement>('time[datetime]')) {
    const at = new Date(t.dateTime);
    if (Number.isNaN(at.getTime())) continue;
    t.title = t.dateTime;
    // timeStyle long: with the time zone.
    t.textContent = at.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'long' });
  }
}

/** Re-rendering a region keeps keyboard focus on the same control of the same row. */
function swapKeepingFocus(region: HTMLElement, html: string) {
  const focused = document.activeElement;
  let restore: string | null = null;
  if (focused instanceof HTMLElement && region.contains(focused)) {
    if (focused.id) restore = `#${CSS.escape(focused.id)}`;
    else {
      const label = focused.getAttribute('aria-label');
      const href = focused.getAttribute('href');
      if (label) restore = `[aria-label="${CSS.escape(label)}"]`;
      else if (href) restore = `[href="${CSS.escape(href)}"]`;
    }
  }
  region.innerHTML = html;
  region.removeAttribute('aria-busy');
  localizeTimes(region);
  if (restore) region.querySelector<HTMLElement>(restore)?.focus();
}

const timers = new Map<HTMLElement, number>();

async function loadRegion(region: HTMLElement) {
  clearTimeout(timers.get(region));
  const src = region.dataset.region;
  if (!src) return;
  try {
    const html = await (await api(src)).text();
    if (region.dataset.region !== src) return; // its filters changed meanwhile
    swapKeepingFocus(region, html);
    const box = $('token-box');
    if (box) box.hidden = true;
    showError('');
    const updated = $('updated');
    if (updated) updated.textContent = `Updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    showError(error);
    if (error instanceof ApiError && (error.status === 404 || error.status === 400)) return;
  }
  const every = Number(region.dataset.every);
  const final = region.querySelector('[data-final="true"]');
  if (every > 0 && !final)
    timers.set(
      region,
      window.setTimeout(() => loadRegion(region), every),
    );
  if (region.id === 'detail') followOutput(final !== null);
}

const regions = () => [...document.querySelectorAll<HTMLElement>('[data-region]')];
const refreshAll = () => Promise.all(regions().map(loadRegion));

// Buttons rendered by the server with the API call they make (drain, undrain, cancel, a partition's state),
// and its JSON body when it has one.
document.addEventListener('click', async (event) => {
  const button = (event.target as Element).closest<HTMLButtonElement>('button[data-action]');
  if (!button?.dataset.action) return;
  button.disabled = true;
  try {
    await api(button.dataset.action, { method: 'POST', body: button.dataset.body ?? '{}' });
    showError('');
  } catch (error) {
    showError(error);
  }
  await refreshAll();
});

// ---------------------------------------------------------------- a job's output
let outputDone = false;
async function followOutput(final: boolean) {
  const section = $('output');
  if (!section?.dataset.logs || outputDone) return;
  if (final) outputDone = true; // one last read after the job ended
  try {
    const res = await api(section.dataset.logs);
    const logs = (await res.json()) as { stdout?: { content: string }; stderr?: { content: string } };
    ($('stdout') as HTMLElement).textContent = logs.stdout?.content ?? '';
    ($('stderr') as HTMLElement).textContent = logs.stderr?.content ?? '';
  } catch (error) {
    // Output past retention: the job page says so in place of the output.
    if (error instanceof ApiError && error.status === 410) {
      ($('stdout') as HTMLElement).textContent = `(${error.message})`;
      outputDone = true;
      showError('');
    } else showError(error);
  }
}

// ---------------------------------------------------------------- the job list's filters
const filters = $('filters') as HTMLFormElement | null;
if (filters) {
  const jobs = $('jobs') as HTMLElement;
  const apply = () => {
    const params = new URLSearchParams();
    for (const [k, v] of new FormData(filters))
      if (typeof v === 'string' && v.trim()) params.set(k, v.trim());
    jobs.dataset.region = `/api/v1/ui/fragments/jobs?${params}`;
    history.replaceState(null, '', params.size > 0 ? `/?${params}` : '/');
    loadRegion(jobs);
  };
  let typing = 0;
  filters.addEventListener('submit', (e) => {
    e.preventDefault();
    apply();
  });
  filters.addEventListener('change', apply);
  filters.addEventListener('input', () => {
    clearTimeout(typing);
    typing = window.setTimeout(apply, 250);
  });
}

// ---------------------------------------------------------------- the utilization chart
interface Sample {
  at: string;
  total_cpus: number;
  allocated_cpus: number;
}
const chartBox = $('chart');
let chartWindow = '1h';
let chart: uPlot | null = null;
let chartTimer = 0;

async function refreshChart() {
  if (!chartBox) return;
  clearTimeout(chartTimer);
  const asked = chartWindow;
  let samples: Sample[] = [];
  try {
    samples = ((await (await api(`/api/v1/ui/utilization?window=${asked}`)).json()) as { samples: Sample[] })
      .samples;
  } catch (error) {
    showError(error);
  }
  if (asked !== chartWindow) return;
  const span = asked === '1h' ? 3600 : 86400;
  const now = Date.now() / 1000;
  const percent = samples.map((s) =>
    s.total_cpus ? Math.round((s.allocated_cpus / s.total_cpus) * 1000) / 10 : 0,
  );
  const data: uPlot.AlignedData = [samples.map((s) => Date.parse(s.at) / 1000), percent];
  const what = asked === '1h' ? 'hour' : '24 hours';
  const last = percent.at(-1);
  const caption = $('chart-caption');
  if (caption) {
    caption.textContent =
      `Utilization over the last ${what}: ${samples.length} samples` +
      (last === undefined ? '' : `, latest ${last}%`) +
      ` (times in ${Intl.DateTimeFormat().resolvedOptions().timeZone})`;
  }
  chartBox.dataset.samples = String(samples.length);
  const width = Math.max(240, chartBox.clientWidth);
  const scales = { x: { time: true, range: (): uPlot.Range.MinMax => [now - span, now] } };
  if (chart) chart.destroy();
  chart = new uPlot(
    {
      width,
      height: 180,
      scales: { ...scales, y: { range: [0, 100] } },
      legend: { show: false },
      axes: [{}, { values: (_u, ticks) => ticks.map((t) => `${t}%`), size: 50 }],
      series: [
        {},
        { label: 'Utilization', stroke: '#2457c5', fill: '#2457c533', width: 2, points: { show: false } },
      ],
    },
    data,
    chartBox,
  );
  // Empty: try again soon (a sample a minute); otherwise every 30 s.
  chartTimer = window.setTimeout(refreshChart, samples.length === 0 ? 2500 : 30_000);
}

for (const button of document.querySelectorAll<HTMLButtonElement>('[data-window]')) {
  button.addEventListener('click', () => {
    chartWindow = button.dataset.window ?? '1h';
    for (const other of document.querySelectorAll('[data-window]')) {
      other.setAttribute('aria-pressed', String(other === button));
    }
    refreshChart();
  });
}
window.addEventListener('resize', () => {
  if (chart && chartBox) chart.setSize({ width: Math.max(240, chartBox.clientWidth), height: 180 });
});

// ---------------------------------------------------------------- the usage page
interface UsageCharts {
  period: 'day' | 'week' | 'month';
  buckets: string[];
  utilization_pct: (number | null)[];
  used_cpu_hours: number[];
  capacity_cpu_hours: number[];
  accounts: { account: string; cpu_hours: number[]; total_cpu_hours: number }[];
  partitions: {
    partition: string;
    cpu_hours: number[];
    mean_wait_s: (number | null)[];
    utilization_pct: (number | null)[];
  }[];
  totals: { used_cpu_hours: number; capacity_cpu_hours: number };
}
const PALETTE = [
  '#2457c5',
  '#c2410c',
  '#15803d',
  '#7c3aed',
  '#b91c1c',
  '#0e7490',
  '#a16207',
  '#be185d',
  '#525252',
];
const usageCharts = new Map<string, uPlot>();
/** Whole hours from 100 up, else 3 significant digits (a short test job is a few ten-thousandths). */
const cpuHours = (h: number) =>
  h >= 100 ? Math.round(h).toLocaleString() : h.toLocaleString(undefined, { maximumSignificantDigits: 3 });
let usagePeriod = 'day';

function drawUsageChart(
  id: string,
  times: number[],
  lines: { label: string; values: (number | null)[] }[],
  unit: string,
  caption: string,
) {
  const box = $(id);
  if (!box) return;
  usageCharts.get(id)?.destroy();
  box.dataset.series = String(lines.length);
  // Values drawn (a wait of 0 s is one), and of them those above zero: what the browser tests look at.
  const values = lines.flatMap((l) => l.values.filter((v) => v !== null));
  box.dataset.values = String(values.length);
  box.dataset.points = String(values.filter((v) => (v ?? 0) > 0).length);
  const chart = new uPlot(
    {
      width: Math.max(240, box.clientWidth),
      height: 200,
      scales: { x: { time: true } },
      axes: [{}, { values: (_u, ticks) => ticks.map((t) => `${t}${unit}`), size: 60 }],
      series: [
        {},
        ...lines.map((l, i) => ({
          label: l.label,
          stroke: PALETTE[i % PALETTE.length],
          width: 2,
          points: { show: times.length < 40 },
        })),
      ],
    },
    [times, ...lines.map((l) => l.values)] as uPlot.AlignedData,
    box,
  );
  usageCharts.set(id, chart);
  const line = $(`${id}-caption`);
  if (line) line.textContent = caption;
}

async function refreshUsage() {
  if (!$('usage-utilization')) return;
  const asked = usagePeriod;
  let data: UsageCharts;
  try {
    data = (await (await api(`/api/v1/ui/usage?period=${asked}`)).json()) as UsageCharts;
  } catch (error) {
    showError(error);
    return;
  }
  if (asked !== usagePeriod) return;
  const times = data.buckets.map((b) => Date.parse(b) / 1000);
  const per = data.period === 'month' ? 'per day' : 'per hour';
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  const { used_cpu_hours: used, capacity_cpu_hours: offered } = data.totals;
  const overall = offered ? `${Math.round((used / offered) * 10_000) / 100}%` : 'no capacity recorded';
  drawUsageChart(
    'usage-utilization',
    times,
    [{ label: 'Utilization', values: data.utilization_pct }],
    '%',
    `Utilization ${per} over the last ${data.period}: ${overall} overall, ${cpuHours(used)} of ${cpuHours(offered)} CPU-hours (times in ${zone})`,
  );
  drawUsageChart(
    'usage-accounts',
    times,
    data.accounts.map((a) => ({ label: a.account, values: a.cpu_hours })),
    ' h',
    `CPU-hours ${per} of ${data.accounts.length} account${data.accounts.length === 1 ? '' : 's'} over the last ${data.period}`,
  );
  drawUsageChart(
    'usage-wait',
    times,
    data.partitions.map((p) => ({ label: p.partition, values: p.mean_wait_s })),
    ' s',
    `Mean queue wait ${per} of the jobs that started, per partition, over the last ${data.period}`,
  );
  drawUsageChart(
    'usage-partitions',
    times,
    data.partitions.map((p) => ({ label: p.partition, values: p.cpu_hours })),
    ' h',
    `CPU-hours ${per} per partition over the last ${data.period}`,
  );
  // Utilization per partition: its CPU-hours over its live nodes' (a node in two partitions offers to both).
  drawUsageChart(
    'usage-partition-utilization',
    times,
    data.partitions.map((p) => ({ label: p.partition, values: p.utilization_pct })),
    '%',
    `Utilization ${per} per partition over the last ${data.period}: its CPU-hours over those its live nodes offered`,
  );
  const body = document.querySelector('#usage-accounts-table tbody');
  if (body) {
    body.replaceChildren(
      ...data.accounts.map((a) => {
        const row = document.createElement('tr');
        const name = document.createElement('td');
        name.textContent = a.account;
        const value = document.createElement('td');
        value.textContent = cpuHours(a.total_cpu_hours);
        row.append(name, value);
        return row;
      }),
    );
  }
}

for (const button of document.querySelectorAll<HTMLButtonElement>('[data-period]')) {
  button.addEventListener('click', () => {
    usagePeriod = button.dataset.period ?? 'day';
    for (const other of document.querySelectorAll('[data-period]')) {
      other.setAttribute('aria-pressed', String(other === button));
    }
    refreshUsage();
  });
}
window.addEventListener('resize', () => {
  for (const [id, chart] of usageCharts) {
    const box = $(id);
    if (box) chart.setSize({ width: Math.max(240, box.clientWidth), height: 200 });
  }
});

// ---------------------------------------------------------------- the reservations page (client/reservations.ts)
reservationsRange(loadRegion);

// ---------------------------------------------------------------- the token
$('token-btn')?.addEventListener('click', () => {
  const box = $('token-box') as HTMLElement;
  box.hidden = !box.hidden;
  if (!box.hidden) $('token-input')?.focus();
});
$('token-form')?.addEventListener('submit', (e) => {
  e.preventDefault();
  const input = $('token-input') as HTMLInputElement;
  localStorage.setItem(TOKEN_KEY, input.value.trim());
  input.value = '';
  start();
});
$('token-clear')?.addEventListener('click', () => {
  localStorage.removeItem(TOKEN_KEY);
  start();
});

// ---------------------------------------------------------------- the accounts page (client/accounts.ts)
initAccounts({ api, showError, refresh: () => refreshAll() });

function start() {
  refreshAll();
  refreshChart();
  refreshUsage();
}

// The old single page's job links (`/#job/42`) lead to the job's page.
const oldJobLink = /^#job\/(\d+)$/.exec(location.hash);
if (location.pathname === '/' && oldJobLink) location.replace(`/ui/jobs/${oldJobLink[1]}`);
else start();
