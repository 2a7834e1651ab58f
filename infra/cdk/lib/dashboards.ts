import { Duration } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';

// The SAM template's two dashboards, widget for widget. Metrics in the
// s3-fanout namespace are the functions' own (Embedded Metric Format, one
// dimension: FunctionName; src/report/emf.rs has the names).

const MINUTE = Duration.minutes(1);
const FIVE_MINUTES = Duration.minutes(5);

type Stat = 'Sum' | 'Maximum' | 'p50' | 'p99';
interface Line {
  readonly name: string;
  readonly label?: string;
  readonly stat?: Stat;
}

function fanoutMetrics(fn: lambda.IFunction, period: Duration, stat: Stat, lines: Line[]): cloudwatch.Metric[] {
  return lines.map((line) => new cloudwatch.Metric({
    namespace: 's3-fanout',
    metricName: line.name,
    dimensionsMap: { FunctionName: fn.functionName },
    statistic: line.stat ?? stat,
    period,
    label: line.label,
  }));
}

function queueMetric(queue: sqs.IQueue, name: string, label: string, period: Duration): cloudwatch.Metric {
  return new cloudwatch.Metric({
    namespace: 'AWS/SQS',
    metricName: name,
    dimensionsMap: { QueueName: queue.queueName },
    statistic: 'Maximum',
    period,
    label,
  });
}

function lambdaHealth(fn: lambda.IFunction, title: string, width = 8): cloudwatch.GraphWidget {
  const metric = (name: string, stat: Stat, label: string) => new cloudwatch.Metric({
    namespace: 'AWS/Lambda', metricName: name, dimensionsMap: { FunctionName: fn.functionName }, statistic: stat, period: MINUTE, label,
  });
  return graph(title, width,
    [metric('Errors', 'Sum', 'errors'), metric('Throttles', 'Sum', 'throttled invocations')],
    { right: [metric('ConcurrentExecutions', 'Maximum', 'concurrent')] });
}

function graph(title: string, width: number, left: cloudwatch.IMetric[], o: {
  right?: cloudwatch.IMetric[];
  stacked?: boolean;
  leftAnnotations?: cloudwatch.HorizontalAnnotation[];
} = {}): cloudwatch.GraphWidget {
  return new cloudwatch.GraphWidget({
    title,
    width,
    height: 6,
    view: cloudwatch.GraphWidgetView.TIME_SERIES,
    left,
    right: o.right,
    stacked: o.stacked,
    leftAnnotations: o.leftAnnotations,
  });
}

function header(markdown: string, alarms: cloudwatch.IAlarm[]): cloudwatch.IWidget[] {
  return [
    new cloudwatch.TextWidget({ markdown, width: 24, height: 2 }),
    new cloudwatch.AlarmStatusWidget({ title: 'Alarms', alarms, width: 24, height: 2 }),
  ];
}

export interface RunDashboardProps {
  readonly stackName: string;
  readonly sourceBucket: string;
  readonly destinationBucket: string;
  readonly stateMachine: sfn.StateMachine;
  readonly workQueue: sqs.IQueue;
  readonly deadLetterQueue: sqs.IQueue;
  readonly copier: lambda.IFunction;
  readonly lister: lambda.IFunction;
  readonly reporter: lambda.IFunction;
  readonly alarms: cloudwatch.IAlarm[];
}

/** Runs: executions, queues, copier and lister metrics. */
export function runDashboard(scope: Construct, p: RunDashboardProps): cloudwatch.Dashboard {
  const dashboard = new cloudwatch.Dashboard(scope, 'RunDashboard', { dashboardName: `${p.stackName}-runs` });
  const [text, alarms] = header(
    `## s3-fanout runs: ${p.stackName}\nFull syncs from bucket ${p.sourceBucket} to bucket ${p.destinationBucket}. ` +
    "Copy counts are the functions' own metrics (namespace s3-fanout): a run's exact totals, and its failed keys, " +
    `are in its report. Runs that failed are in Step Functions, state machine ${p.stateMachine.stateMachineName}.`,
    p.alarms);
  const execution = (name: string) => new cloudwatch.Metric({
    namespace: 'AWS/States', metricName: name, dimensionsMap: { StateMachineArn: p.stateMachine.stateMachineArn },
    statistic: 'Sum', period: FIVE_MINUTES,
  });
  dashboard.addWidgets(text);
  dashboard.addWidgets(alarms);
  dashboard.addWidgets(
    graph('Runs (executions)', 8, ['ExecutionsStarted', 'ExecutionsSucceeded', 'ExecutionsFailed', 'ExecutionsTimedOut',
      'ExecutionsAborted'].map(execution)),
    graph('Work queue: copy batches waiting and in flight', 8, [
      queueMetric(p.workQueue, 'ApproximateNumberOfMessagesVisible', 'waiting', MINUTE),
      queueMetric(p.workQueue, 'ApproximateNumberOfMessagesNotVisible', 'in flight', MINUTE),
    ], { stacked: true }),
    graph('Dead-letter queue: batches that failed every receive', 8,
      [queueMetric(p.deadLetterQueue, 'ApproximateNumberOfMessagesVisible', 'messages', FIVE_MINUTES)]),
  );
  const bytes = fanoutMetrics(p.copier, MINUTE, 'Sum', [{ name: 'BytesCopied' }])[0];
  dashboard.addWidgets(
    graph('Copier: objects', 8, fanoutMetrics(p.copier, MINUTE, 'Sum', [
      { name: 'ObjectsCopied', label: 'copied' },
      { name: 'ObjectsSkipped', label: 'skipped' },
      { name: 'ObjectsFailed', label: 'failed' },
    ])),
    graph('Copier: throughput', 8, [new cloudwatch.MathExpression({
      expression: 'bytes / PERIOD(bytes)',
      label: 'bytes copied per second',
      usingMetrics: { bytes },
      period: MINUTE,
    })]),
    graph('Copier: S3 retries and throttles (SlowDown)', 8, fanoutMetrics(p.copier, MINUTE, 'Sum', [
      { name: 'Retries', label: 'retries' },
      { name: 'Throttles', label: 'throttles' },
    ])),
  );
  dashboard.addWidgets(
    graph('Copier: batch duration, and where it went (ms, p50)', 8, fanoutMetrics(p.copier, MINUTE, 'p50', [
      { name: 'BatchDuration', label: 'p50' },
      { name: 'BatchDuration', stat: 'p99', label: 'p99' },
      { name: 'BatchQueueTime', label: 'queued before it' },
      { name: 'BatchCopyTime', label: 'copying' },
      { name: 'BatchResultTime', label: 'recording the result' },
      { name: 'BatchHandoffTime', label: 'handing on to VALIDATE' },
    ])),
    lambdaHealth(p.copier, 'Copier: Lambda errors, throttles, concurrency'),
    graph("Run progress: batches sent and done (reporter's checks)", 8, fanoutMetrics(p.reporter, MINUTE, 'Maximum', [
      { name: 'BatchesSent', label: 'sent' },
      { name: 'BatchesDone', label: 'done' },
    ])),
  );
  dashboard.addWidgets(
    graph('Lister: keys listed, skipped, failed; batches sent', 8, fanoutMetrics(p.lister, MINUTE, 'Sum', [
      { name: 'ObjectsListed', label: 'listed' },
      { name: 'ObjectsSkipped', label: 'skipped (equal)' },
      { name: 'ObjectsFailed', label: 'failed' },
    ]), { right: fanoutMetrics(p.lister, MINUTE, 'Sum', [{ name: 'BatchesSent', label: 'batches sent' }]) }),
    graph('Lister: S3 retries and throttles (SlowDown)', 8, fanoutMetrics(p.lister, MINUTE, 'Sum', [
      { name: 'Retries', label: 'retries' },
      { name: 'Throttles', label: 'throttles' },
    ])),
    graph('Lister: invocation duration (ms)', 8, fanoutMetrics(p.lister, MINUTE, 'p50', [
      { name: 'BatchDuration', label: 'p50' },
      { name: 'BatchDuration', stat: 'p99', label: 'p99' },
    ])),
  );
  return dashboard;
}

export interface ReplicationDashboardProps {
  readonly stackName: string;
  readonly sourceBucket: string;
  readonly destinationBucket: string;
  readonly replicator: lambda.IFunction;
  readonly eventQueue: sqs.IQueue;
  readonly eventDeadLetterQueue: sqs.IQueue;
  readonly alarms: cloudwatch.IAlarm[];
  readonly lagAlarmMilliseconds: number;
}

/** Replication: lag (with the lag alarm's threshold drawn), keys, event queues. */
export function replicationDashboard(scope: Construct, p: ReplicationDashboardProps): cloudwatch.Dashboard {
  const dashboard = new cloudwatch.Dashboard(scope, 'ReplicationDashboard', { dashboardName: `${p.stackName}-replication` });
  const [text, alarms] = header(
    `## s3-fanout replication: ${p.stackName}\nObject events of bucket ${p.sourceBucket} applied to bucket ` +
    `${p.destinationBucket} by ${p.replicator.functionName}. Lag is from each event's time to its replica. Events ` +
    'that failed wait in the event dead-letter queue; the nightly full sync repairs their keys.',
    p.alarms);
  dashboard.addWidgets(text);
  dashboard.addWidgets(alarms);
  dashboard.addWidgets(
    graph('Replication lag (ms)', 8, fanoutMetrics(p.replicator, MINUTE, 'p50', [
      { name: 'ReplicationLag', label: 'p50' },
      { name: 'ReplicationLag', stat: 'p99', label: 'p99' },
      { name: 'ReplicationLag', stat: 'Maximum', label: 'max' },
    ]), { leftAnnotations: [{ label: 'alarm (p99)', value: p.lagAlarmMilliseconds }] }),
    graph('Keys reconciled', 8, fanoutMetrics(p.replicator, MINUTE, 'Sum', [
      { name: 'Replicated', label: 'replicated' },
      { name: 'Deleted', label: 'deleted' },
      { name: 'InSync', label: 'already in sync' },
      { name: 'Skipped', label: 'skipped' },
      { name: 'Ignored', label: 'ignored' },
      { name: 'Failed', label: 'failed' },
    ]), { stacked: true }),
    graph('Bytes replicated', 8, fanoutMetrics(p.replicator, MINUTE, 'Sum', [{ name: 'BytesReplicated', label: 'bytes' }])),
  );
  dashboard.addWidgets(
    graph('Event queue: oldest event waiting (s) and depth', 8,
      [queueMetric(p.eventQueue, 'ApproximateAgeOfOldestMessage', 'oldest (s)', MINUTE)], {
        right: [
          queueMetric(p.eventQueue, 'ApproximateNumberOfMessagesVisible', 'waiting', MINUTE),
          queueMetric(p.eventQueue, 'ApproximateNumberOfMessagesNotVisible', 'in flight', MINUTE),
        ],
      }),
    graph('Event dead-letter queue', 8,
      [queueMetric(p.eventDeadLetterQueue, 'ApproximateNumberOfMessagesVisible', 'events', FIVE_MINUTES)]),
    lambdaHealth(p.replicator, 'Replicator: Lambda errors, throttles, concurrency'),
  );
  dashboard.addWidgets(
    graph('Replicator: S3 retries and throttles (SlowDown)', 12, fanoutMetrics(p.replicator, MINUTE, 'Sum', [
      { name: 'Retries', label: 'retries' },
      { name: 'Throttles', label: 'throttles' },
    ])),
    graph('Replicator: batch duration (ms)', 12, fanoutMetrics(p.replicator, MINUTE, 'p50', [
      { name: 'BatchDuration', label: 'p50' },
      { name: 'BatchDuration', stat: 'p99', label: 'p99' },
    ])),
  );
  return dashboard;
}
