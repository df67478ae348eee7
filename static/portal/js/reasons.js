// Why the scheduler holds or ended a job, in words: Slurm's reason codes (and the few PBS
// comments queue_info passes on) as sentences a newcomer can act on.

const SLURM = {
  None: "No reason given: the scheduler has not looked at the job yet.",
  Priority: "Other jobs with a higher priority are ahead of it in the queue.",
  Resources: "It waits for nodes to become free; it starts when they do.",
  PartitionTimeLimit: "Its wall time is longer than the partition allows: it will never start there. Cancel it and submit again with a shorter wall time or another partition.",
  PartitionNodeLimit: "It asks for more nodes than the partition allows: it will never start there. Cancel it and ask for fewer nodes or another partition.",
  PartitionDown: "The partition is down; the job waits until an administrator brings it up.",
  PartitionInactive: "The partition is inactive; the job waits until it is active again.",
  AssocMaxWallDurationPerJobLimit: "Its wall time is longer than your account allows per job: it will never start. Submit again with a shorter wall time.",
  AssocMaxJobsLimit: "Your account already runs as many jobs as it may; it starts when one of them ends.",
  AssocGrpCpuLimit: "Your account's group uses all the CPUs it may at once; it starts when some are freed.",
  AssocGrpNodeLimit: "Your account's group uses all the nodes it may at once; it starts when some are freed.",
  AssocGrpCPUMinutesLimit: "Your account has used up its CPU time allocation; ask its manager for more.",
  AssocGrpBillingMinutes: "Your account has used up its allocation; ask its manager for more.",
  QOSMaxWallDurationPerJobLimit: "Its wall time is longer than the QOS allows: it will never start. Submit again with a shorter wall time or another QOS.",
  QOSMaxJobsPerUserLimit: "You already run as many jobs as the QOS allows; it starts when one of them ends.",
  QOSGrpCpuLimit: "The QOS's CPUs are all in use; it starts when some are freed.",
  ReqNodeNotAvail: "A node it needs is unavailable (down, drained or reserved).",
  Reservation: "It waits for its advance reservation to begin.",
  BeginTime: "It was submitted to start later; it waits for its start time.",
  Dependency: "It waits for another job it depends on to finish.",
  DependencyNeverSatisfied: "A job it depends on ended in a way that can never satisfy the dependency: cancel it.",
  JobHeldUser: "It is held by its owner (scontrol hold); release it to let it start.",
  JobHeldAdmin: "An administrator holds it; ask them to release it.",
  InvalidAccount: "The account is not valid for this user or partition: cancel it and choose another account.",
  InvalidQOS: "The QOS is not valid for this account: cancel it and choose another QOS.",
  BadConstraints: "Its constraints (features) cannot be met by any node: cancel it and change them.",
  NodeDown: "A node it was given went down.",
  "launch failed requeued held": "Slurm could not launch it, put it back in the queue and held it; ask an administrator.",
  NonZeroExitCode: "The batch script ended with a non-zero exit code.",
  RaisedSignal: "The batch script was killed by a signal.",
  TimeLimit: "It ran longer than its wall time and was stopped.",
  OutOfMemory: "It used more memory than it asked for and was stopped.",
  Prolog: "The scheduler's prolog script is running before the job starts.",
  Cleaning: "The scheduler is cleaning up after the job.",
};

/** A reason code (or text) in words; "" for none. */
export function reasonText(code) {
  const raw = String(code || "").trim();
  if (!raw) return "";
  const key = raw.replace(/^\(|\)$/g, "");
  if (SLURM[key]) return SLURM[key];
  const head = key.split(/[\s,(]/)[0];
  if (SLURM[head]) return SLURM[head];
  if (/^AssocGrp|^QOSGrp/.test(key)) return "A limit on the resources its account or QOS may use at once holds it; it starts when they are freed.";
  if (/^AssocMax|^QOSMax/.test(key)) return "It exceeds a per-job limit of its account or QOS, and may never start: check the limits.";
  return key;
}

/** True if a job held for this reason will never start without a change. */
export function reasonIsFatal(code) {
  return /^(PartitionTimeLimit|PartitionNodeLimit|AssocMaxWallDurationPerJobLimit|QOSMaxWallDurationPerJobLimit|DependencyNeverSatisfied|InvalidAccount|InvalidQOS|BadConstraints)$/
    .test(String(code || "").trim());
}
