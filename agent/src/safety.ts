/**
 * Whom jobs run as, and where they may run. Checked once at start by the command line:
 *
 * - As root, the agent refuses to start unless CONDUCTOR_RUN_AS names an unprivileged user (each job is
 *   spawned with that uid/gid) or CONDUCTOR_ALLOW_ROOT=1 says that jobs may run as root.
 * - A job's working directory must resolve (symlinks followed) inside the job root, or it runs in /tmp:
 *   CONDUCTOR_JOB_ROOT, by default the run-as user's home (none without CONDUCTOR_RUN_AS: jobs then run
 *   as the agent's own user, who may enter any directory anyway); CONDUCTOR_ALLOW_ANY_WORKDIR=1 lifts that.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import {
  type AgentConfig,
  isRunAsMap,
  parseRunAsMap,
  type RunAsUser,
  type SafetySettings,
} from './config.ts';

/** A passwd entry by name or uid: `getent passwd` (NSS: LDAP, sssd, ...), else /etc/passwd. */
export function lookupUser(nameOrUid: string): RunAsUser | undefined {
  let line: string | undefined;
  try {
    line = execFileSync('getent', ['passwd', nameOrUid], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    })
      .split('\n')
      .find(Boolean);
  } catch {
    try {
      line = readFileSync('/etc/passwd', 'utf8')
        .split('\n')
        .find((l) => {
          const [name, , uid] = l.split(':');
          return name === nameOrUid || uid === nameOrUid;
        });
    } catch {
      line = undefined;
    }
  }
  if (!line) return undefined;
  const [name, , uid, gid, , home] = line.split(':');
  if (!name || !/^\d+$/.test(uid ?? '') || !/^\d+$/.test(gid ?? '')) return undefined;
  return { name, uid: Number(uid), gid: Number(gid), home: home || '/' };
}

export const ROOT_REFUSAL =
  'refusing to start as root: jobs would run as root. Set CONDUCTOR_RUN_AS=<unprivileged user> to run ' +
  'them as that user, or CONDUCTOR_ALLOW_ROOT=1 to run them as root anyway';

/**
 * The config with its run-as user and job root resolved, or why the agent must not start. `uid` is the
 * agent's own (process.getuid()); `lookup` finds users (lookupUser).
 */
export function resolveSafety(
  config: AgentConfig,
  safety: SafetySettings,
  uid: number | undefined,
  lookup: (nameOrUid: string) => RunAsUser | undefined = lookupUser,
): { config: AgentConfig } | { error: string } {
  if (safety.runAs !== undefined && isRunAsMap(safety.runAs)) {
    return resolveRunAsMap(config, safety, safety.runAs, uid, lookup);
  }
  let runAs: RunAsUser | undefined;
  if (safety.runAs !== undefined) {
    runAs = lookup(safety.runAs);
    if (!runAs) return { error: `CONDUCTOR_RUN_AS: no user ${JSON.stringify(safety.runAs)} on this machine` };
    if (runAs.uid === 0 && !safety.allowRoot) return { error: ROOT_REFUSAL };
    if (uid !== undefined && uid !== 0 && uid !== runAs.uid) {
      return {
        error: `CONDUCTOR_RUN_AS=${safety.runAs} needs the agent to run as root (it switches to that user for each job)`,
      };
    }
    if (uid === runAs.uid) runAs = undefined; // already that user: nothing to switch
  } else if (uid === 0 && !safety.allowRoot) {
    return { error: ROOT_REFUSAL };
  }
  const jobRoot = safety.allowAnyWorkDir ? undefined : (safety.jobRoot ?? runAs?.home);
  return {
    config: {
      ...config,
      ...(runAs ? { runAs } : {}),
      ...(jobRoot ? { jobRoot } : {}),
    },
  };
}

/** resolveSafety for CONDUCTOR_RUN_AS=<owner>:<user>,...: every user must exist and not be root. */
function resolveRunAsMap(
  config: AgentConfig,
  safety: SafetySettings,
  text: string,
  uid: number | undefined,
  lookup: (nameOrUid: string) => RunAsUser | undefined,
): { config: AgentConfig } | { error: string } {
  const entries = parseRunAsMap(text);
  if ('error' in entries) return entries;
  const runAsByOwner: Record<string, RunAsUser> = {};
  for (const { owner, user } of entries) {
    const found = lookup(user);
    if (!found)
      return {
        error: `CONDUCTOR_RUN_AS: no user ${JSON.stringify(user)} on this machine (for owner ${owner})`,
      };
    if (found.uid === 0 && !safety.allowRoot) return { error: ROOT_REFUSAL };
    if (uid !== undefined && uid !== 0 && uid !== found.uid) {
      return {
        error: `CONDUCTOR_RUN_AS=${text} needs the agent to run as root (it switches to each owner's user for their jobs)`,
      };
    }
    runAsByOwner[owner] = found;
  }
  const jobRoot = safety.allowAnyWorkDir ? undefined : safety.jobRoot;
  return {
    config: {
      ...config,
      runAsByOwner,
      ...(jobRoot ? { jobRoot } : {}),
      ...(!safety.allowAnyWorkDir && !jobRoot ? { jobRootIsHome: true } : {}),
    },
  };
}
