import { Token } from 'aws-cdk-lib';

/**
 * Properties of an {@link S3Fanout} stack.
 *
 * Each property is a parameter of `infra/template.yaml` with its name in
 * camelCase and the same default; `scripts/cdk-parity.py` synthesizes both
 * with the same values and fails when their resources differ. A SAM "true"/"false"
 * string is a boolean here, a SAM Number a number. The template's
 * parameter descriptions are the longer story.
 */
export interface S3FanoutProps {
  /** Bucket to copy from (an S3 bucket name). */
  readonly sourceBucket: string;
  /**
   * Folder to copy from: empty for the whole bucket, otherwise ending in "/"
   * (for example "data/"). IAM grants exactly "<prefix>*".
   * @default ""
   */
  readonly sourcePrefix?: string;
  /** Bucket to copy to (an S3 bucket name). */
  readonly destinationBucket: string;
  /**
   * Folder to copy to, empty or ending in "/".
   * @default ""
   */
  readonly destinationPrefix?: string;
  /**
   * What makes two objects differ.
   * @default "etag"
   */
  readonly mode?: 'missing' | 'size' | 'etag';
  /**
   * Keys to sync: a JSON array of globs relative to sourcePrefix, for
   * example `["*.jpg","logs/**"]`. Empty: every key.
   * @default ""
   */
  readonly include?: string;
  /**
   * Keys not to sync, even if include matches them: a JSON array of globs.
   * @default ""
   */
  readonly exclude?: string;
  /**
   * Delete destination objects that are absent from the source. Only then
   * does the copier's role get s3:DeleteObject.
   * @default false
   */
  readonly allowDelete?: boolean;
  /**
   * Folder in the report bucket for run state and reports; non-empty,
   * ending in "/". Report objects expire after reportRetentionDays.
   * @default "runs/"
   */
  readonly reportPrefix?: string;
  /**
   * Lambda architecture; cargo-lambda cross-compiles for it at deploy time.
   * @default "arm64"
   */
  readonly architecture?: 'arm64' | 'x86_64';
  /**
   * Most lister invocations the range queue's event source runs at once
   * (ScalingConfig.MaximumConcurrency, 2-1000).
   * @default 16
   */
  readonly listingConcurrency?: number;
  /**
   * Range tasks one lister invocation lists at once (its event source's
   * BatchSize, 1-10).
   * @default 8
   */
  readonly listerStreams?: number;
  /**
   * Copier function timeout in seconds. The work queue's visibility timeout
   * is 6x this.
   * @default 900
   */
  readonly copierTimeout?: 60 | 120 | 300 | 600 | 900;
  /**
   * SQS messages per copier invocation (1-10).
   * @default 1
   */
  readonly copierBatchSize?: number;
  /**
   * Most copier invocations the work queue's event source runs at once
   * (2-1000): the fleet's throttle.
   * @default 50
   */
  readonly copierMaxConcurrency?: number;
  /**
   * Copies in flight per message, for the copier and the replicator (1-256).
   * @default 16
   */
  readonly copierTaskConcurrency?: number;
  /**
   * Receives before a message moves to its dead-letter queue (work, range
   * and event queues alike; 1-1000).
   * @default 5
   */
  readonly maxReceiveCount?: number;
  /**
   * Run a full sync on scheduleExpression. false keeps the schedule,
   * disabled.
   * @default true
   */
  readonly scheduleEnabled?: boolean;
  /**
   * When the full sync starts: an EventBridge Scheduler cron(...), rate(...)
   * or at(...) expression, read in scheduleTimezone.
   * @default "cron(0 2 * * ? *)"
   */
  readonly scheduleExpression?: string;
  /**
   * IANA time zone of scheduleExpression.
   * @default "UTC"
   */
  readonly scheduleTimezone?: string;
  /**
   * Deploy incremental replication: the replicator, its event queue with a
   * dead-letter queue and alarm, the queue policy, an EventBridge rule and
   * the replication dashboard.
   * @default false
   */
  readonly replication?: boolean;
  /**
   * With replication, delete a destination object when its source object is
   * gone. Only then does the replicator's role get s3:DeleteObject.
   * @default false
   */
  readonly replicateDeletes?: boolean;
  /**
   * With replication, append each key's new versions and delete markers to
   * its history at the destination, as a run with "all_versions" does; both
   * buckets must be versioned. The replicator's role then may list versions
   * and send s3:DeleteObject, which on a versioned bucket appends a delete
   * marker and removes no bytes.
   * @default false
   */
  readonly replicateAllVersions?: boolean;
  /**
   * Account that owns sourceBucket when it is not this stack's (12 digits).
   * Empty: this stack's account.
   * @default ""
   */
  readonly sourceAccountId?: string;
  /**
   * S3 events per replicator invocation (1-10).
   * @default 10
   */
  readonly replicatorBatchSize?: number;
  /**
   * Most replicator invocations the event queue's event source runs at once
   * (2-1000).
   * @default 20
   */
  readonly replicatorMaxConcurrency?: number;
  /**
   * Days before report objects under reportPrefix expire (1-3650).
   * @default 90
   */
  readonly reportRetentionDays?: number;
  /**
   * Days the functions' log groups keep events (a value CloudWatch Logs
   * accepts).
   * @default 30
   */
  readonly logRetentionDays?: number;
  /**
   * KMS key ARN of the source's SSE-KMS objects; the copier and replicator
   * get kms:Decrypt on it through S3.
   * @default ""
   */
  readonly sourceKmsKeyArn?: string;
  /**
   * KMS key ARN every copy is written with (SSE-KMS); the copier and the
   * replicator get kms:GenerateDataKey and kms:Decrypt on it through S3.
   * @default ""
   */
  readonly destinationKmsKeyArn?: string;
  /**
   * SNS topic ARN the alarms notify. Empty for none.
   * @default ""
   */
  readonly alarmTopicArn?: string;
  /**
   * With replication, ReplicationLagAlarm fires when the p99 lag stays above
   * this many seconds for five minutes (1-999999). A string of digits in
   * the SAM template, where CloudFormation cannot multiply.
   * @default 300
   */
  readonly replicationLagAlarmSeconds?: number;
  /**
   * Create an SNS topic the state machine publishes to when a run ends.
   * @default false
   */
  readonly runNotifications?: boolean;
  /**
   * With runNotifications, an address subscribed to the run topic. Empty
   * for none.
   * @default ""
   */
  readonly notificationEmail?: string;

  // ---- CDK only: no SAM parameter says these

  /**
   * The s3-fanout repository: cargo-lambda builds each function from its
   * crate, `functions/<name>/Cargo.toml` (binary `s3-fanout-<name>`), at
   * deploy time, and the state machine is `statemachine/sync.asl.json`.
   * @default - the repository this construct's files sit in
   */
  readonly repositoryRoot?: string;
  /**
   * Add the SAM template's stack outputs (StateMachineArn, ReportBucketName,
   * WorkQueueUrl, ...) under the same keys, which `s3-fanout run`,
   * `status` and `report` read. Output keys are per stack, so a second
   * S3Fanout in one stack needs false here (and its names would clash
   * anyway: see the README).
   * @default true
   */
  readonly stackOutputs?: boolean;
}

/** Every property resolved to its default: what the construct builds from. */
export type ResolvedProps = Required<Omit<S3FanoutProps, 'repositoryRoot'>> & { repositoryRoot?: string };

export const DEFAULTS = {
  sourcePrefix: '',
  destinationPrefix: '',
  mode: 'etag',
  include: '',
  exclude: '',
  allowDelete: false,
  reportPrefix: 'runs/',
  architecture: 'arm64',
  listingConcurrency: 16,
  listerStreams: 8,
  copierTimeout: 900,
  copierBatchSize: 1,
  copierMaxConcurrency: 50,
  copierTaskConcurrency: 16,
  maxReceiveCount: 5,
  scheduleEnabled: true,
  scheduleExpression: 'cron(0 2 * * ? *)',
  scheduleTimezone: 'UTC',
  replication: false,
  replicateDeletes: false,
  replicateAllVersions: false,
  sourceAccountId: '',
  replicatorBatchSize: 10,
  replicatorMaxConcurrency: 20,
  reportRetentionDays: 90,
  logRetentionDays: 30,
  sourceKmsKeyArn: '',
  destinationKmsKeyArn: '',
  alarmTopicArn: '',
  replicationLagAlarmSeconds: 300,
  runNotifications: false,
  notificationEmail: '',
  stackOutputs: true,
} as const;

// The SAM template's AllowedPattern/AllowedValues/MinValue/MaxValue, checked
// at synth time: a deploy that CloudFormation would refuse there is refused
// here before anything is uploaded. Bucket names and prefixes without "*"
// or "?" are also what keeps every IAM resource ARN exact.
const BUCKET = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;
const PREFIX = /^([^*?]*\/)?$/;
const GLOBS = /^(\[.*\])?$/;
const KMS_KEY = /^(arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key\/[a-zA-Z0-9-]+)?$/;
const LOG_RETENTION = [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653];

export function resolveProps(props: S3FanoutProps): ResolvedProps {
  const p = { ...DEFAULTS, ...stripUndefined(props) } as ResolvedProps;
  const problems: string[] = [];
  const pattern = (name: keyof ResolvedProps, re: RegExp, what: string) => {
    const value = p[name];
    if (typeof value === 'string' && !Token.isUnresolved(value) && !re.test(value)) {
      problems.push(`${name} ${JSON.stringify(value)} ${what}`);
    }
  };
  const range = (name: keyof ResolvedProps, min: number, max: number) => {
    const value = p[name] as number;
    if (!Token.isUnresolved(value) && !(Number.isInteger(value) && value >= min && value <= max)) {
      problems.push(`${name} ${value} must be a whole number from ${min} to ${max}`);
    }
  };
  const oneOf = (name: keyof ResolvedProps, values: readonly unknown[]) => {
    if (!values.includes(p[name])) {
      problems.push(`${name} ${JSON.stringify(p[name])} must be one of ${values.join(', ')}`);
    }
  };
  pattern('sourceBucket', BUCKET, 'must be an S3 bucket name');
  pattern('destinationBucket', BUCKET, 'must be an S3 bucket name');
  pattern('sourcePrefix', PREFIX, 'must be empty or end with "/", without "*" or "?"');
  pattern('destinationPrefix', PREFIX, 'must be empty or end with "/", without "*" or "?"');
  pattern('reportPrefix', /^[^*?]*\/$/, 'must end with "/", without "*" or "?"');
  pattern('include', GLOBS, 'must be empty or a JSON array of glob strings');
  pattern('exclude', GLOBS, 'must be empty or a JSON array of glob strings');
  for (const name of ['include', 'exclude'] as const) {
    if (p[name].length > 1024) problems.push(`${name} is longer than 1024 characters`);
  }
  pattern('scheduleExpression', /^(cron|rate|at)\(.+\)$/, 'must be a cron(...), rate(...) or at(...) expression');
  pattern('sourceAccountId', /^([0-9]{12})?$/, 'must be empty or a 12-digit AWS account id');
  pattern('sourceKmsKeyArn', KMS_KEY, 'must be empty or a KMS key ARN (not an alias)');
  pattern('destinationKmsKeyArn', KMS_KEY, 'must be empty or a KMS key ARN (not an alias)');
  pattern('alarmTopicArn', /^(arn:aws[a-z-]*:sns:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_-]+)?$/, 'must be empty or an SNS topic ARN');
  pattern('notificationEmail', /^([^@\s]+@[^@\s]+\.[^@\s]+)?$/, 'must be empty or an email address');
  oneOf('mode', ['missing', 'size', 'etag']);
  oneOf('architecture', ['arm64', 'x86_64']);
  oneOf('copierTimeout', [60, 120, 300, 600, 900]);
  oneOf('logRetentionDays', LOG_RETENTION);
  range('listingConcurrency', 2, 1000);
  range('listerStreams', 1, 10);
  range('copierBatchSize', 1, 10);
  range('copierMaxConcurrency', 2, 1000);
  range('copierTaskConcurrency', 1, 256);
  range('maxReceiveCount', 1, 1000);
  range('replicatorBatchSize', 1, 10);
  range('replicatorMaxConcurrency', 2, 1000);
  range('reportRetentionDays', 1, 3650);
  range('replicationLagAlarmSeconds', 1, 999999);
  if (problems.length > 0) {
    throw new Error(`S3Fanout: invalid properties:\n  ${problems.join('\n  ')}`);
  }
  return p;
}

function stripUndefined<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}
