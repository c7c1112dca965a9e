/**
 * scancel(1) over Conductor's cancel and signal routes: Slurm 22.05's options, job ids and filters (all
 * AND-ed), `--signal` to running jobs, and Slurm's error text and exit code for jobs that are unknown or
 * already finished, so scripts that drive scancel behave the same here.
 */
import { constants } from 'node:os';
import { createInterface } from 'node:readline';
import { ApiError } from '../api.ts';
import type { Io } from '../io.ts';
import { getoptLong, type OptionSpec } from './getopt.ts';
import {
  controllerError,
  currentUser,
  expandHostlist,
  given,
  type JobFilter,
  listJobs,
  listOption,
  parseStates,
  reportParse,
  type SlurmJob,
  slurmClient,
  userNames,
  VERSION,
  withEnvironment,
} from './squeue.ts';

const NOT_HERE = 'Conductor has';

export const SCANCEL_OPTIONS: readonly OptionSpec[] = [
  {
    long: 'account',
    short: 'A',
    arg: 'required',
    fate: 'honoured',
    note: 'only jobs of this account',
    value: 'account',
  },
  {
    long: 'batch',
    short: 'b',
    arg: 'none',
    fate: 'honoured',
    note: 'with --signal: only the batch shell gets the signal, not its children',
  },
  {
    long: 'clusters',
    short: 'M',
    arg: 'required',
    fate: 'refused',
    note: 'one Conductor control plane is one cluster: talk to another with CONDUCTOR_URL',
    value: '<string>',
  },
  { long: 'ctld', arg: 'none', fate: 'warned', note: 'requests always go through the control plane' },
  {
    long: 'full',
    short: 'f',
    arg: 'none',
    fate: 'honoured',
    note: "with --signal: the batch shell and all its children get the signal (the default: a Conductor job's processes are one group)",
  },
  { long: 'help', arg: 'none', fate: 'honoured', note: 'prints the help' },
  {
    long: 'hurry',
    short: 'H',
    arg: 'none',
    fate: 'warned',
    note: `${NOT_HERE} no burst buffers to stage out`,
  },
  {
    long: 'interactive',
    short: 'i',
    arg: 'none',
    fate: 'honoured',
    note: 'asks `[y/n]?` for each job on stdin',
  },
  {
    long: 'jobname',
    short: 'n',
    arg: 'required',
    fate: 'honoured',
    note: 'only jobs of this name',
    value: 'job_name',
  },
  { long: 'name', arg: 'required', fate: 'honoured', note: 'the same as --jobname', value: 'job_name' },
  {
    long: 'me',
    arg: 'none',
    fate: 'honoured',
    note: 'only your jobs (the owner named by CONDUCTOR_OWNER, else your user name)',
  },
  {
    long: 'nodelist',
    short: 'w',
    arg: 'required',
    fate: 'honoured',
    note: 'only jobs on these nodes (a hostlist: `n[1-3],gpu1`)',
    value: 'host1,host2,...',
  },
  {
    long: 'partition',
    short: 'p',
    arg: 'required',
    fate: 'honoured',
    note: 'only jobs of this partition',
    value: 'partition_name',
  },
  {
    long: 'qos',
    short: 'q',
    arg: 'required',
    fate: 'honoured',
    note: 'only jobs of this QOS (a job without one is `normal`)',
    value: 'qos',
  },
  {
    long: 'quiet',
    short: 'Q',
    arg: 'none',
    fate: 'honoured',
    note: 'no error (and exit 0) for a job that is unknown or already finished',
  },
  {
    long: 'reservation',
    short: 'R',
    arg: 'required',
    fate: 'refused',
    note: 'cancelling by reservation is not supported yet (cancel the jobs by id)',
    value: 'reservation_name',
  },
  {
    long: 'sibling',
    arg: 'required',
    fate: 'refused',
    note: `${NOT_HERE} no federation`,
    value: 'cluster_name',
  },
  {
    long: 'signal',
    short: 's',
    arg: 'required',
    fate: 'honoured',
    note: 'sends this signal (name or number) to running jobs instead of cancelling them (POST /api/v1/jobs/{id}/signal)',
    value: 'signal_name',
  },
  {
    long: 'state',
    short: 't',
    arg: 'required',
    fate: 'honoured',
    note: 'only jobs in this state (PENDING, RUNNING or SUSPENDED; long or compact, any case)',
    value: 'job_state_name',
  },
  { long: 'usage', arg: 'none', fate: 'honoured', note: 'prints the usage' },
  {
    long: 'user',
    short: 'u',
    arg: 'required',
    fate: 'honoured',
    note: 'only jobs of this user (a name, or your uid)',
    value: 'user_name',
  },
  {
    long: 'verbose',
    short: 'v',
    arg: 'none',
    fate: 'honoured',
    note: 'says each job it cancels or signals on stderr',
  },
  { long: 'version', short: 'V', arg: 'none', fate: 'honoured', note: `prints \`${VERSION}\`` },
  {
    long: 'wckey',
    arg: 'required',
    fate: 'refused',
    note: `${NOT_HERE} no workload characterization keys`,
    value: 'wckey',
  },
];

const SCANCEL_USAGE = `Usage: scancel [-A account] [--batch] [--full] [--interactive] [-n job_name]
               [-p partition] [-Q] [-q qos] [-R reservation] [-s signal | integer]
               [-t PENDING | RUNNING | SUSPENDED] [--usage] [-u user_name]
               [--hurry] [-V] [-v] [-w hosts...] [--wckey=wckey]
               [job_id[_array_id][.step_id]]
`;

function scancelHelp(): string {
  const lines = [...SCANCEL_OPTIONS]
    .sort((a, b) => a.long.localeCompare(b.long))
    .map((s) => {
      const names = `${s.short ? `-${s.short}, ` : '    '}--${s.long}${s.arg === 'none' ? '' : `=${s.value}`}`;
      return `  ${names.padEnd(34)} ${s.fate === 'honoured' ? s.note : `(${s.fate === 'warned' ? 'ignored' : 'refused'}: ${s.note})`}`;
    });
  return `Usage: scancel [OPTIONS] [job_id[_array_id][.step_id]]\n${lines.join('\n')}\n`;
}

/** A signal as the API takes it: its name without SIG (`USR1`), or a bare number 1..64; null when unknown. */
export function signalName(text: string): string | null {
  const upper = text.trim().toUpperCase().replace(/^SIG/, '');
  const signals = constants.signals as Record<string, number>;
  if (/^\d+$/.test(upper)) {
    const found = Object.keys(signals).find((name) => signals[name] === Number(upper));
    if (found) return found.replace(/^SIG/, '');
    // Real-time signals have numbers but no names.
    return Number(upper) >= 1 && Number(upper) <= 64 ? String(Number(upper)) : null;
  }
  return `SIG${upper}` in signals ? upper : null;
}

/** What the API's refusal means in Slurm's words (slurm_strerror). */
function slurmError(error: ApiError): { text: string; done: boolean } {
  if (error.status === 404) return { text: 'Invalid job id specified', done: true };
  if (error.code === 'job_finished') return { text: 'Job/step already completing or completed', done: true };
  if (error.code === 'job_not_running') return { text: 'Job is pending execution', done: false };
  return { text: controllerError(error), done: false };
}

/** One answer per prompt from stdin, as fgets reads them (null at EOF); closed, stdin lets the process end. */
function answers(): { next(): Promise<string | null>; close(): void } {
  const reader = createInterface({ input: process.stdin });
  const lines = reader[Symbol.asyncIterator]();
  return {
    next: async () => {
      const line = await lines.next();
      return line.done ? null : line.value;
    },
    close: () => reader.close(),
  };
}

export async function runScancel(args: string[], io: Io, env: NodeJS.ProcessEnv): Promise<number> {
  const parsed = getoptLong(args, SCANCEL_OPTIONS);
  const stop = reportParse('scancel', parsed, io);
  if (stop !== null) return stop;
  const { positionals } = parsed;
  const options = withEnvironment(
    parsed.options,
    SCANCEL_OPTIONS,
    env,
    {
      SCANCEL_ACCOUNT: 'account',
      SCANCEL_BATCH: 'batch',
      SCANCEL_FULL: 'full',
      SCANCEL_INTERACTIVE: 'interactive',
      SCANCEL_NAME: 'jobname',
      SCANCEL_PARTITION: 'partition',
      SCANCEL_QOS: 'qos',
      SCANCEL_STATE: 'state',
      SCANCEL_USER: 'user',
      SCANCEL_VERBOSE: 'verbose',
    },
    [['jobname', 'name']],
  );
  if (given(options, 'help')) {
    io.out(scancelHelp());
    return 0;
  }
  if (given(options, 'usage')) {
    io.out(SCANCEL_USAGE);
    return 0;
  }
  if (given(options, 'version')) {
    io.out(`${VERSION}\n`);
    return 0;
  }
  const quiet = given(options, 'quiet');
  const verbose = given(options, 'verbose');
  const signalText = options.filter((o) => o.spec.long === 'signal').at(-1)?.value;
  const signal = signalText === undefined ? undefined : signalName(signalText);
  if (signal === null) {
    io.err(`Unknown job signal: ${signalText}\n`);
    return 1;
  }

  const ids: { id: number; text: string }[] = [];
  /** Array tasks named `123_4` or `123_[1-3]` (the brackets may hold commas: split on commas outside them). */
  const arrayTargets: { id: number; tasks: string; text: string }[] = [];
  for (const word of positionals.flatMap((p) => p.split(/,(?![^[]*\])/))) {
    if (/^\d+_/.test(word)) {
      const m = /^(\d+)_(\d+|\[[\d,:-]+\])$/.exec(word);
      if (!m) {
        io.err(`scancel: error: Invalid job id ${word}\n`);
        return 1;
      }
      arrayTargets.push({ id: Number(m[1]), tasks: (m[2] as string).replace(/^\[|\]$/g, ''), text: word });
      continue;
    }
    const m = /^(\d+)(?:\.(batch|\d+))?$/.exec(word);
    if (!m) {
      io.err(`scancel: error: Invalid job id ${word}\n`);
      return 1;
    }
    if (m[2] !== undefined && m[2] !== 'batch') {
      io.err(`scancel: error: Kill job error on job step id ${word}: Invalid job id specified\n`);
      return 1;
    }
    ids.push({ id: Number(m[1]), text: m[1] as string });
  }

  const me = currentUser(env);
  const client = slurmClient(env);
  const filter: JobFilter = {};
  const names = listOption(options, 'jobname', 'name');
  if (names) filter.names = names;
  const users = listOption(options, 'user');
  if (given(options, 'me')) filter.owners = [...(users ? userNames(users.join(','), env) : []), me.name];
  else if (users) filter.owners = userNames(users.join(','), env);
  if (filter.owners) filter.ownerlessIsMine = filter.owners.includes(me.name) && !client.config.token;
  const partitions = listOption(options, 'partition');
  if (partitions) filter.partitions = partitions;
  const accounts = listOption(options, 'account');
  if (accounts) filter.accounts = accounts;
  const qos = listOption(options, 'qos');
  if (qos) filter.qos = qos;
  const nodes = listOption(options, 'nodelist');
  if (nodes) filter.nodes = nodes.flatMap(expandHostlist);
  const stateText = options.filter((o) => o.spec.long === 'state').at(-1)?.value;
  if (stateText !== undefined) {
    const state = parseStates(stateText);
    if ('bad' in state || state.states.length !== 1) {
      const source = given(parsed.options, 'state')
        ? 'Invalid job state specified'
        : 'Unrecognized SCANCEL_STATE value';
      io.err(`${source}: ${stateText}\nValid job states are PENDING, RUNNING, and SUSPENDED\n`);
      return 1;
    }
    filter.states = state.states;
  }
  const filtered = Object.keys(filter).length > 0;
  if (arrayTargets.length > 0 && (filtered || signal)) {
    io.err(
      'scancel: error: array task ids (123_4, 123_[1-3]) are cancelled as they are: no filters, no --signal\n',
    );
    return 1;
  }
  if (arrayTargets.length > 0) {
    let failed = 0;
    for (const target of arrayTargets) {
      if (verbose) io.err(`scancel: Terminating job ${target.text}\n`);
      try {
        await client.request(
          'POST',
          `/api/v1/arrays/${target.id}/cancel?tasks=${encodeURIComponent(target.tasks)}`,
        );
      } catch (error) {
        if (!(error instanceof ApiError)) throw error;
        const { text } = slurmError(error);
        io.err(`scancel: error: Kill job error on job id ${target.text}: ${text}\n`);
        failed = 1;
      }
    }
    if (ids.length === 0) return failed;
  }
  if (ids.length === 0 && !filtered) {
    io.err('scancel: error: No job identification provided\n');
    return 1;
  }

  let targets: { id: number; text: string; job?: SlurmJob }[] = ids;
  if (filtered) {
    filter.states ??= ['PENDING', 'RUNNING'];
    if (ids.length > 0) filter.ids = ids.map((i) => i.id);
    let jobs: SlurmJob[];
    try {
      jobs = await listJobs(client, filter);
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      io.err(`scancel: error: slurm_load_jobs error: ${controllerError(error)}\n`);
      return 1;
    }
    targets = jobs.map((job) => ({ id: job.id, text: String(job.id), job }));
  }

  const ask = given(options, 'interactive') ? answers() : null;
  const batchOnly = given(options, 'batch') && !given(options, 'full');
  const signalNumber = signal
    ? ((constants.signals as Record<string, number>)[`SIG${signal}`] ?? Number(signal))
    : undefined;
  let rc = 0;
  try {
    for (const target of targets) {
      try {
        if (ask) {
          const job = target.job ?? (await client.request<SlurmJob>('GET', `/api/v1/jobs/${target.id}`));
          let answer: string | null;
          do {
            io.out(`Cancel job_id=${target.text} name=${job.name} partition=${job.partition ?? ''} [y/n]? `);
            answer = await ask.next();
          } while (answer !== null && !/^[yYnN]/.test(answer));
          if (answer === null || /^[nN]/.test(answer)) continue;
        }
        if (signal) {
          if (verbose)
            io.err(`scancel: Signal ${signalNumber} to ${batchOnly ? 'batch ' : ''}job ${target.text}\n`);
          await client.request('POST', `/api/v1/jobs/${target.id}/signal`, { signal, batch_only: batchOnly });
        } else {
          if (verbose) io.err(`scancel: Terminating job ${target.text}\n`);
          // `scancel 123` of an array's job id cancels the whole array (the route does), as Slurm's does.
          await client.request('POST', `/api/v1/jobs/${target.id}/cancel`);
        }
      } catch (error) {
        if (!(error instanceof ApiError)) throw error;
        const { text, done } = slurmError(error);
        if (quiet && done) continue;
        io.err(`scancel: error: Kill job error on job id ${target.text}: ${text}\n`);
        rc = 1;
      }
    }
  } finally {
    ask?.close();
  }
  return rc;
}
