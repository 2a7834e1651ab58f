import * as fs from 'node:fs';
import * as path from 'node:path';
import { Aws, CfnOutput, CfnResource, Duration, RemovalPolicy, Stack } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as cloudwatchActions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as events from 'aws-cdk-lib/aws-events';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as scheduler from 'aws-cdk-lib/aws-scheduler';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { RustFunction, cargoLambdaVersion } from 'cargo-lambda-cdk';
import { Construct } from 'constructs';
import { replicationDashboard, runDashboard } from './dashboards';
import { ResolvedProps, S3FanoutProps, resolveProps } from './props';

/**
 * The s3-fanout serverless stack, the same one `infra/template.yaml`
 * deploys with SAM: five Rust functions built by cargo-lambda, the work,
 * range and (with replication) event queues with their dead-letter queues,
 * the run table, the report bucket, the Step Functions state machine of
 * `statemachine/sync.asl.json`, the nightly schedule, dashboards, alarms and
 * run notifications, each function with a role of its own on exact ARNs.
 *
 * Construct ids are the SAM template's logical ids, so the parity test
 * (`scripts/cdk-parity.py`) can pair every resource with its twin.
 *
 * Names are `<stack name>-planner`, `<stack name>-runs`, ... as in the SAM
 * template: one S3Fanout per stack.
 */
export class S3Fanout extends Construct {
  public readonly stateMachine: sfn.StateMachine;
  public readonly workQueue: sqs.Queue;
  public readonly deadLetterQueue: sqs.Queue;
  public readonly rangeQueue: sqs.Queue;
  public readonly rangeDeadLetterQueue: sqs.Queue;
  public readonly reportBucket: s3.Bucket;
  public readonly runTable: dynamodb.Table;
  public readonly plannerFunction: lambda.Function;
  public readonly listerFunction: lambda.Function;
  public readonly copierFunction: lambda.Function;
  public readonly reporterFunction: lambda.Function;
  /** Only with `replication: true`. */
  public readonly replicatorFunction?: lambda.Function;
  /** Only with `replication: true`. */
  public readonly eventQueue?: sqs.Queue;
  /** Only with `replication: true`. */
  public readonly eventDeadLetterQueue?: sqs.Queue;
  /** Only with `runNotifications: true`. */
  public readonly runTopic?: sns.Topic;

  private readonly p: ResolvedProps;
  private readonly repoRoot: string;

  constructor(scope: Construct, id: string, props: S3FanoutProps) {
    super(scope, id);
    const p = (this.p = resolveProps(props));
    this.repoRoot = p.repositoryRoot ?? findRepoRoot(__dirname);
    // Without cargo-lambda on PATH, cargo-lambda-cdk falls back to building
    // in its Docker image, which mounts only the function's crate: the
    // workspace and the library it needs are outside it, so that build
    // cannot work. Say so now rather than after a Docker pull.
    if (Stack.of(this).bundlingRequired && !cargoLambdaVersion()) {
      throw new Error('S3Fanout: `cargo lambda --version` fails: install cargo-lambda (and zig, for arm64), ' +
        'for example `pip install cargo-lambda==1.9.2`, to build the functions; or synthesize without ' +
        'building them (-c s3-fanout:bundle=false), an assembly for checks only');
    }
    const stackName = Aws.STACK_NAME;

    // ------------------------------------------------------------ queues
    // SSE-SQS stated, 4 days' retention on work queues and 14 on their
    // dead-letter queues: see the SAM template for why each number.
    this.deadLetterQueue = this.queue('DeadLetterQueue', { retention: 14 });
    this.workQueue = this.queue('WorkQueue', {
      retention: 4,
      visibility: 6 * p.copierTimeout,
      deadLetterQueue: this.deadLetterQueue,
    });
    const deadLetterQueueAlarm = this.dlqAlarm('DeadLetterQueueAlarm', this.deadLetterQueue,
      's3-fanout copy tasks failed maxReceiveCount times and are in the dead-letter queue. Their keys are in the ' +
      "run's failures.csv; fix the cause, then redrive the messages to the work queue.");
    this.rangeDeadLetterQueue = this.queue('RangeDeadLetterQueue', { retention: 14 });
    this.rangeQueue = this.queue('RangeQueue', {
      retention: 4,
      visibility: 960,
      deadLetterQueue: this.rangeDeadLetterQueue,
    });
    this.dlqAlarm('RangeDeadLetterQueueAlarm', this.rangeDeadLetterQueue,
      's3-fanout range tasks failed maxReceiveCount times and are in the range dead-letter queue: those ranges ' +
      "of the buckets were not listed, and the run's summary.json names them (ListingIncomplete). Fix the cause " +
      'and start the run again.');

    // ----------------------------------------------------- report bucket
    this.runTable = new dynamodb.Table(this, 'RunTable', {
      billingMode: dynamodb.BillingMode.PAY_PER_REQUEST,
      partitionKey: { name: 'pk', type: dynamodb.AttributeType.STRING },
      sortKey: { name: 'sk', type: dynamodb.AttributeType.STRING },
      timeToLiveAttribute: 'expires_at',
      encryption: dynamodb.TableEncryption.AWS_MANAGED,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    skipChecks(this.runTable,
      ['CKV_AWS_28', "counters of runs in progress; the report in the report bucket is the durable record, and a lost counter is rebuilt by the next run"],
      ['CKV_AWS_119', 'encrypted at rest with an AWS owned key; holds batch ids and counts, no object data']);

    this.reportBucket = new s3.Bucket(this, 'ReportBucket', {
      encryption: s3.BucketEncryption.S3_MANAGED,
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      lifecycleRules: [
        { id: 'ExpireReports', prefix: p.reportPrefix, expiration: Duration.days(p.reportRetentionDays) },
        { id: 'AbortIncompleteMultipartUploads', abortIncompleteMultipartUploadAfter: Duration.days(7) },
      ],
      // Reports are the audit trail of every run: they outlive the stack.
      removalPolicy: RemovalPolicy.RETAIN,
    });
    skipChecks(this.reportBucket,
      ['CKV_AWS_18', "only this stack's roles write here; CloudTrail S3 data events audit that without a second bucket"],
      ['CKV_AWS_21', 'state objects are rewritten all run long, reports never: versions only add cost']);
    // Not enforceSSL: that statement has no Sid and names {"AWS": "*"};
    // this one is the SAM template's, word for word.
    this.reportBucket.addToResourcePolicy(new iam.PolicyStatement({
      sid: 'DenyInsecureTransport',
      effect: iam.Effect.DENY,
      principals: [new iam.StarPrincipal()],
      actions: ['s3:*'],
      resources: [this.reportBucket.bucketArn, this.reportBucket.arnForObjects('*')],
      conditions: { Bool: { 'aws:SecureTransport': 'false' } },
    }));

    // ---------------------------------------------------------- functions
    const runState = this.reportBucket.arnForObjects(`${p.reportPrefix}*`);
    const sourceBucketArn = `arn:${Aws.PARTITION}:s3:::${p.sourceBucket}`;
    const sourceObjects = `arn:${Aws.PARTITION}:s3:::${p.sourceBucket}/${p.sourcePrefix}*`;
    const destinationBucketArn = `arn:${Aws.PARTITION}:s3:::${p.destinationBucket}`;
    const destinationObjects = `arn:${Aws.PARTITION}:s3:::${p.destinationBucket}/${p.destinationPrefix}*`;
    // s3:ListBucket confined to the stack's prefix of each bucket; an empty
    // prefix is the whole bucket, and a condition on a key the request
    // lacks would refuse it (the SAM template's comment above PlannerRole).
    const listSource = (sid: string, op: 'StringLike' | 'StringLikeIfExists') =>
      statement(sid, ['s3:ListBucket'], [sourceBucketArn],
        p.sourcePrefix === '' ? undefined : { [op]: { 's3:prefix': `${p.sourcePrefix}*` } });
    const listDestination = (sid: string, op: 'StringLike' | 'StringLikeIfExists') =>
      statement(sid, ['s3:ListBucket'], [destinationBucketArn],
        p.destinationPrefix === '' ? undefined : { [op]: { 's3:prefix': `${p.destinationPrefix}*` } });
    // A run "as_of" a time lists the source's versions (the SAM template's
    // comment on ListSourceVersions).
    const sourceVersions = [
      statement('ListSourceVersions', ['s3:ListBucketVersions'], [sourceBucketArn],
        p.sourcePrefix === '' ? undefined : { StringLike: { 's3:prefix': `${p.sourcePrefix}*` } }),
      statement('ReadSourceVersioning', ['s3:GetBucketVersioning'], [sourceBucketArn]),
    ];
    // "all_versions": each key's histories listed on both sides and aligned,
    // the destination's newest copy HEADed by version id for its origin (the
    // SAM template's comments on ListDestinationVersions).
    const listSourceVersions = statement('ListSourceVersions', ['s3:ListBucketVersions'], [sourceBucketArn],
      p.sourcePrefix === '' ? undefined : { StringLike: { 's3:prefix': `${p.sourcePrefix}*` } });
    const listDestinationVersions = statement('ListDestinationVersions', ['s3:ListBucketVersions'],
      [destinationBucketArn],
      p.destinationPrefix === '' ? undefined : { StringLike: { 's3:prefix': `${p.destinationPrefix}*` } });
    const readDestinationVersions = statement('ReadDestinationVersions', ['s3:GetObjectVersion'],
      [destinationObjects]);
    const listRunState = statement('ListRunState', ['s3:ListBucket'], [this.reportBucket.bucketArn],
      { StringLikeIfExists: { 's3:prefix': `${p.reportPrefix}*` } });
    const runStateObjects = statement('RunState', ['s3:GetObject', 's3:PutObject'], [runState]);
    const viaS3 = { StringLike: { 'kms:ViaService': 's3.*.amazonaws.com' } };
    const kmsStatements = [
      ...(p.sourceKmsKeyArn ? [statement('DecryptSource', ['kms:Decrypt'], [p.sourceKmsKeyArn], viaS3)] : []),
      ...(p.destinationKmsKeyArn
        ? [statement('EncryptDestination', ['kms:GenerateDataKey', 'kms:Decrypt'], [p.destinationKmsKeyArn], viaS3)]
        : []),
    ];
    const consume = ['sqs:ReceiveMessage', 'sqs:DeleteMessage', 'sqs:GetQueueAttributes', 'sqs:ChangeMessageVisibility'];

    this.plannerFunction = this.rustFunction('planner', {
      description: 's3-fanout planner: validates the run, splits the key space into shards, starts each listing pass.',
      timeout: 60,
      environment: {
        S3_FANOUT_RANGE_QUEUE_URL: this.rangeQueue.queueUrl,
        S3_FANOUT_RUN_TABLE: this.runTable.tableName,
      },
      statements: (logGroup) => [
        writeOwnLogs(logGroup),
        listSource('ListSource', 'StringLike'),
        listDestination('ListDestination', 'StringLike'),
        statement('ReadVersioning', ['s3:GetBucketVersioning'], [sourceBucketArn, destinationBucketArn]),
        runStateObjects,
        statement('StartListing', ['sqs:SendMessage'], [this.rangeQueue.queueArn]),
        statement('CountRanges', ['dynamodb:PutItem', 'dynamodb:UpdateItem', 'dynamodb:Query'], [this.runTable.tableArn]),
        listRunState,
      ],
      skips: [
        ['CKV_AWS_116', "invoked synchronously by the state machine, whose Retry/Catch handle its errors"],
        ['CKV_AWS_115', 'the state machine calls it one at a time per run; no reservation (see the SAM template)'],
      ],
    });

    this.listerFunction = this.rustFunction('lister', {
      description: "s3-fanout lister: lists a range of source and destination until its deadline, enqueues copy tasks and the range's next task.",
      timeout: 900,
      memorySize: 512,
      environment: {
        S3_FANOUT_WORK_QUEUE_URL: this.workQueue.queueUrl,
        S3_FANOUT_RANGE_QUEUE_URL: this.rangeQueue.queueUrl,
        S3_FANOUT_RUN_TABLE: this.runTable.tableName,
        S3_FANOUT_LISTER_STREAMS: String(p.listerStreams),
      },
      statements: (logGroup) => [
        writeOwnLogs(logGroup),
        // A KMS pair is proven by a HEAD of each side (s3:GetObject), and
        // ListBucket then keeps a key gone since its listing a 404 (the SAM
        // template's comment on ProvePairsByChecksums).
        statement('ProvePairsByChecksums', ['s3:GetObject'], [sourceObjects, destinationObjects]),
        listSource('ListSource', 'StringLikeIfExists'),
        ...sourceVersions,
        listDestination('ListDestination', 'StringLikeIfExists'),
        listDestinationVersions,
        readDestinationVersions,
        statement('EnqueueCopyTasks', ['sqs:SendMessage'], [this.workQueue.queueArn]),
        statement('ConsumeAndHandOnRangeTasks', [...consume, 'sqs:SendMessage'], [this.rangeQueue.queueArn]),
        statement('CountRun', ['dynamodb:PutItem', 'dynamodb:UpdateItem', 'dynamodb:BatchGetItem', 'dynamodb:GetItem'],
          [this.runTable.tableArn]),
        runStateObjects,
        listRunState,
      ],
      queue: { id: 'RangeQueue', queue: this.rangeQueue, batchSize: p.listerStreams, maxConcurrency: p.listingConcurrency },
      skips: [
        ['CKV_AWS_116', 'invoked by the SQS event source; failed range tasks reach RangeDeadLetterQueue by redrive'],
        ['CKV_AWS_115', 'capped by ScalingConfig.MaximumConcurrency (listingConcurrency)'],
      ],
    });

    this.copierFunction = this.rustFunction('copier', {
      description: 's3-fanout copier: server-side copies (CopyObject, UploadPartCopy) of SQS copy tasks.',
      timeout: p.copierTimeout,
      memorySize: 1024,
      environment: {
        S3_FANOUT_WORK_QUEUE_URL: this.workQueue.queueUrl,
        S3_FANOUT_MAX_RECEIVE_COUNT: String(p.maxReceiveCount),
        S3_FANOUT_COPY_CONCURRENCY: String(p.copierTaskConcurrency),
        S3_FANOUT_RUN_TABLE: this.runTable.tableName,
        S3_FANOUT_RANGE_QUEUE_URL: this.rangeQueue.queueUrl,
      },
      statements: (logGroup) => [
        writeOwnLogs(logGroup),
        statement('ConsumeAndSplitCopyTasks', [...consume, 'sqs:SendMessage'], [this.workQueue.queueArn]),
        statement('SendCopiedRangesToValidate', ['sqs:SendMessage'], [this.rangeQueue.queueArn]),
        statement('CountRun', ['dynamodb:PutItem', 'dynamodb:UpdateItem', 'dynamodb:BatchGetItem', 'dynamodb:GetItem'],
          [this.runTable.tableArn]),
        statement('ReadSourceObjects',
          ['s3:GetObject', 's3:GetObjectVersion', 's3:GetObjectTagging', 's3:GetObjectVersionTagging'], [sourceObjects]),
        listSource('RelistSourceKey', 'StringLikeIfExists'),
        statement('WriteDestinationObjects',
          ['s3:PutObject', 's3:PutObjectTagging', 's3:AbortMultipartUpload', 's3:GetObject'], [destinationObjects]),
        statement('FindOpenUploads', ['s3:ListBucketMultipartUploads'], [destinationBucketArn]),
        listSourceVersions,
        listDestinationVersions,
        readDestinationVersions,
        ...(p.allowDelete ? [statement('DeleteDestinationObjects', ['s3:DeleteObject'], [destinationObjects])] : []),
        runStateObjects,
        listRunState,
        ...kmsStatements,
      ],
      queue: { id: 'WorkQueue', queue: this.workQueue, batchSize: p.copierBatchSize, maxConcurrency: p.copierMaxConcurrency },
      skips: [
        ['CKV_AWS_116', 'invoked by the SQS event source; failed tasks reach DeadLetterQueue by redrive'],
        ['CKV_AWS_115', 'capped by ScalingConfig.MaximumConcurrency (copierMaxConcurrency)'],
      ],
    });

    this.reporterFunction = this.rustFunction('reporter', {
      description: "s3-fanout reporter: merges the run's results into summary.json and failures.csv.",
      timeout: 300,
      environment: {
        S3_FANOUT_WORK_QUEUE_URL: this.workQueue.queueUrl,
        S3_FANOUT_RANGE_QUEUE_URL: this.rangeQueue.queueUrl,
        S3_FANOUT_RUN_TABLE: this.runTable.tableName,
      },
      statements: (logGroup) => [
        writeOwnLogs(logGroup),
        runStateObjects,
        listRunState,
        statement('ReadQueueDepths', ['sqs:GetQueueAttributes'], [this.workQueue.queueArn, this.rangeQueue.queueArn]),
        statement('ReadRunCounts', ['dynamodb:Query', 'dynamodb:BatchGetItem', 'dynamodb:GetItem'], [this.runTable.tableArn]),
        statement('CleanLedgers', ['s3:DeleteObject'], [this.reportBucket.arnForObjects(`${p.reportPrefix}ledgers/*`)]),
      ],
      skips: [
        ['CKV_AWS_116', "invoked synchronously by the state machine, whose Retry/Catch handle its errors"],
        ['CKV_AWS_115', 'the state machine calls it one at a time per run; no reservation (see the SAM template)'],
      ],
    });

    // -------------------------------------------------------- replication
    let replicationLagAlarm: cloudwatch.Alarm | undefined;
    let eventDeadLetterQueueAlarm: cloudwatch.Alarm | undefined;
    if (p.replication) {
      const eventDeadLetterQueue = (this.eventDeadLetterQueue = this.queue('EventDeadLetterQueue', { retention: 14 }));
      // 6x the replicator's fixed 300 s timeout.
      const eventQueue = (this.eventQueue = this.queue('EventQueue', {
        retention: 4,
        visibility: 1800,
        deadLetterQueue: eventDeadLetterQueue,
        sqsReason: 'SSE-SQS encrypts it; S3 and EventBridge cannot send under aws/sqs (checkov#7381)',
      }));
      eventDeadLetterQueueAlarm = this.dlqAlarm('EventDeadLetterQueueAlarm', eventDeadLetterQueue,
        's3-fanout replication events failed and are in the event dead-letter queue: their keys may differ between ' +
        'source and destination until the nightly full sync repairs them. Fix the cause, then redrive the messages ' +
        'to the event queue.');

      const objectEventsRule = new events.Rule(this, 'ObjectEventsRule', {
        description: `s3-fanout: object events of s3://${p.sourceBucket}/${p.sourcePrefix} to the replicator's queue`,
        eventBus: events.EventBus.fromEventBusName(this, 'DefaultBus', 'default'),
        enabled: true,
        eventPattern: {
          source: ['aws.s3'],
          detailType: ['Object Created', 'Object Deleted'],
          detail: {
            bucket: { name: [p.sourceBucket] },
            ...(p.sourcePrefix === '' ? {} : { object: { key: [{ prefix: p.sourcePrefix }] } }),
          },
        },
      });
      // Not targets.SqsQueue: it would add its own queue policy statement
      // beside EventQueuePolicy's, which already says who may send.
      objectEventsRule.addTarget({ bind: () => ({ id: 'EventQueue', arn: eventQueue.queueArn }) });

      // Confused deputy: each service may send only for the one resource it
      // acts for, and the bucket's owner is pinned too.
      const queuePolicy = new sqs.QueuePolicy(this, 'EventQueuePolicy', { queues: [eventQueue] });
      queuePolicy.document.addStatements(
        new iam.PolicyStatement({
          sid: 'SourceBucketNotifications',
          principals: [new iam.ServicePrincipal('s3.amazonaws.com')],
          actions: ['sqs:SendMessage'],
          resources: [eventQueue.queueArn],
          conditions: {
            ArnEquals: { 'aws:SourceArn': sourceBucketArn },
            StringEquals: { 'aws:SourceAccount': p.sourceAccountId || Aws.ACCOUNT_ID },
          },
        }),
        new iam.PolicyStatement({
          sid: 'ObjectEventsRule',
          principals: [new iam.ServicePrincipal('events.amazonaws.com')],
          actions: ['sqs:SendMessage'],
          resources: [eventQueue.queueArn],
          conditions: {
            ArnEquals: { 'aws:SourceArn': objectEventsRule.ruleArn },
            StringEquals: { 'aws:SourceAccount': Aws.ACCOUNT_ID },
          },
        }),
      );

      const deleteReplicated = p.replicateDeletes;
      const allVersions = p.replicateAllVersions;
      this.replicatorFunction = this.rustFunction('replicator', {
        description: 's3-fanout replicator: reconciles each key of an S3 object event at the destination.',
        timeout: 300,
        memorySize: 512,
        environment: {
          S3_FANOUT_REPLICATE_DELETES: deleteReplicated ? 'true' : 'false',
          S3_FANOUT_REPLICATE_ALL_VERSIONS: allVersions ? 'true' : 'false',
          S3_FANOUT_DEAD_LETTER_QUEUE_URL: eventDeadLetterQueue.queueUrl,
          S3_FANOUT_MAX_RECEIVE_COUNT: String(p.maxReceiveCount),
          S3_FANOUT_COPY_CONCURRENCY: String(p.copierTaskConcurrency),
        },
        statements: (logGroup) => [
          writeOwnLogs(logGroup),
          statement('ConsumeObjectEvents', consume, [eventQueue.queueArn]),
          statement('DeadLetterUnfixableEvents', ['sqs:SendMessage'], [eventDeadLetterQueue.queueArn]),
          statement('ReadSourceObjects', ['s3:GetObject', 's3:GetObjectVersion', 's3:GetObjectTagging'], [sourceObjects]),
          listSource('ListSource', 'StringLikeIfExists'),
          listDestination('ListDestination', 'StringLikeIfExists'),
          statement('WriteDestinationObjects',
            ['s3:PutObject', 's3:PutObjectTagging', 's3:AbortMultipartUpload', 's3:GetObject'], [destinationObjects]),
          statement('FindOpenUploads', ['s3:ListBucketMultipartUploads'], [destinationBucketArn]),
          statement('AppendLedgerJournal', ['s3:PutObject'],
            [this.reportBucket.arnForObjects(`${p.reportPrefix}ledgers/*/journal-*`)]),
          // A delete marker appended to a history is a DeleteObject too.
          ...(deleteReplicated || allVersions
            ? [statement('DeleteDestinationObjects', ['s3:DeleteObject'], [destinationObjects])] : []),
          ...(allVersions ? [
            statement('ReadVersioning', ['s3:GetBucketVersioning'], [sourceBucketArn, destinationBucketArn]),
            listSourceVersions,
            listDestinationVersions,
            statement('ReadSourceVersionTags', ['s3:GetObjectVersionTagging'], [sourceObjects]),
            readDestinationVersions,
          ] : []),
          ...kmsStatements,
        ],
        queue: {
          id: 'ObjectEvents', queue: eventQueue, batchSize: p.replicatorBatchSize, maxConcurrency: p.replicatorMaxConcurrency,
        },
        skips: [
          ['CKV_AWS_116', 'invoked by the SQS event source; failed events reach EventDeadLetterQueue by redrive'],
          ['CKV_AWS_115', 'capped by ScalingConfig.MaximumConcurrency (replicatorMaxConcurrency)'],
        ],
      });

      replicationLagAlarm = new cloudwatch.Alarm(this, 'ReplicationLagAlarm', {
        alarmDescription:
          's3-fanout replication lags: the p99 delay between an S3 object event and its replica stayed above ' +
          'ReplicationLagAlarmSeconds for five minutes. See the replication dashboard: a growing event queue ' +
          '(replicator too slow or throttled) or replicator errors.',
        metric: new cloudwatch.Metric({
          namespace: 's3-fanout',
          metricName: 'ReplicationLag',
          dimensionsMap: { FunctionName: this.replicatorFunction.functionName },
          statistic: 'p99',
          period: Duration.minutes(1),
        }),
        evaluationPeriods: 5,
        datapointsToAlarm: 5,
        // The metric is in milliseconds.
        threshold: p.replicationLagAlarmSeconds * 1000,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      });
      this.notifyAlarmTopic(replicationLagAlarm, true);
    }

    // ----------------------------------------------------- run notifications
    if (p.runNotifications) {
      this.runTopic = new sns.Topic(this, 'RunTopic', {
        topicName: `${stackName}-runs`,
        displayName: 's3-fanout',
      });
      // The AWS managed aws/sns key by its alias, as the SAM template names
      // it: an imported alias would render as an ARN of this account.
      (this.runTopic.node.defaultChild as sns.CfnTopic).kmsMasterKeyId = 'alias/aws/sns';
      if (p.notificationEmail) {
        new sns.Subscription(this, 'RunTopicEmailSubscription', {
          topic: this.runTopic,
          protocol: sns.SubscriptionProtocol.EMAIL,
          endpoint: p.notificationEmail,
        });
      }
    }

    // ------------------------------------------------------- state machine
    // An explicit role with one inline policy, as SAM makes from the
    // template's Policies: the L2's own role would add a default policy and
    // a trust condition SAM's has not.
    const stateMachineRole = new iam.Role(this, 'SyncStateMachineRole', {
      assumedBy: new iam.ServicePrincipal('states.amazonaws.com'),
      inlinePolicies: {
        SyncStateMachineRolePolicy0: new iam.PolicyDocument({
          statements: [
            statement('InvokeRunFunctions', ['lambda:InvokeFunction'], [
              this.plannerFunction.functionArn,
              `${this.plannerFunction.functionArn}:*`,
              this.reporterFunction.functionArn,
              `${this.reporterFunction.functionArn}:*`,
            ]),
            ...(this.runTopic ? [statement('PublishRunNotifications', ['sns:Publish'], [this.runTopic.topicArn])] : []),
          ],
        }),
      },
    });
    // One definition for SAM and CDK: the file itself, with the same
    // substitutions (an empty topic makes the ShouldNotify* choices skip).
    this.stateMachine = new sfn.StateMachine(this, 'SyncStateMachine', {
      stateMachineType: sfn.StateMachineType.STANDARD,
      definitionBody: sfn.DefinitionBody.fromFile(path.join(this.repoRoot, 'statemachine', 'sync.asl.json')),
      definitionSubstitutions: {
        PlannerFunctionArn: this.plannerFunction.functionArn,
        ReporterFunctionArn: this.reporterFunction.functionArn,
        RunTopicArn: this.runTopic ? this.runTopic.topicArn : '',
      },
      role: stateMachineRole.withoutPolicyUpdates(),
    });
    dropRedundantDependsOn(this.stateMachine);

    // ------------------------------------------------------------ schedule
    const scheduleRole = new iam.Role(this, 'ScheduleRole', {
      // Schedules of this account only (confused deputy).
      assumedBy: new iam.ServicePrincipal('scheduler.amazonaws.com', {
        conditions: { StringEquals: { 'aws:SourceAccount': Aws.ACCOUNT_ID } },
      }),
      inlinePolicies: {
        'start-sync': new iam.PolicyDocument({
          statements: [statement('StartSync', ['states:StartExecution'], [this.stateMachine.stateMachineArn])],
        }),
      },
    });
    // L1: the scheduler L2's targets grant through the role's default
    // policy, a second policy the SAM template does not have.
    const schedule = new scheduler.CfnSchedule(this, 'NightlySchedule', {
      name: `${stackName}-nightly`,
      description: 's3-fanout: full sync in etag mode with the VALIDATE phase.',
      scheduleExpression: p.scheduleExpression,
      scheduleExpressionTimezone: p.scheduleTimezone,
      state: p.scheduleEnabled ? 'ENABLED' : 'DISABLED',
      flexibleTimeWindow: { mode: 'OFF' },
      target: {
        arn: this.stateMachine.stateMachineArn,
        roleArn: scheduleRole.roleArn,
        input: '{"mode":"etag","validate":true}',
        retryPolicy: { maximumRetryAttempts: 3, maximumEventAgeInSeconds: 3600 },
      },
    });

    // ---------------------------------------------------------- monitoring
    const runFailedAlarm = new cloudwatch.Alarm(this, 'RunFailedAlarm', {
      alarmDescription:
        'An s3-fanout run failed or timed out. `s3-fanout status RUN` (or the execution\'s error) says how: ' +
        'SyncFailed names the report with the failed keys, PlanFailed the refused input or unreachable bucket.',
      metric: new cloudwatch.MathExpression({
        expression: 'FILL(failed, 0) + FILL(timedout, 0)',
        label: 'Runs failed or timed out',
        period: Duration.minutes(5),
        usingMetrics: {
          failed: this.stateMachine.metricFailed({ period: Duration.minutes(5), statistic: 'Sum' }),
          timedout: this.stateMachine.metricTimedOut({ period: Duration.minutes(5), statistic: 'Sum' }),
        },
      }),
      evaluationPeriods: 1,
      threshold: 0,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    // No OK action: a failed run is an event, not a state that clears.
    this.notifyAlarmTopic(runFailedAlarm, false);

    const runs = runDashboard(this, {
      stackName,
      sourceBucket: p.sourceBucket,
      destinationBucket: p.destinationBucket,
      stateMachine: this.stateMachine,
      workQueue: this.workQueue,
      deadLetterQueue: this.deadLetterQueue,
      copier: this.copierFunction,
      lister: this.listerFunction,
      reporter: this.reporterFunction,
      alarms: [runFailedAlarm, deadLetterQueueAlarm],
    });
    let replicationBoard: cloudwatch.Dashboard | undefined;
    if (this.replicatorFunction && this.eventQueue && this.eventDeadLetterQueue && replicationLagAlarm &&
        eventDeadLetterQueueAlarm) {
      replicationBoard = replicationDashboard(this, {
        stackName,
        sourceBucket: p.sourceBucket,
        destinationBucket: p.destinationBucket,
        replicator: this.replicatorFunction,
        eventQueue: this.eventQueue,
        eventDeadLetterQueue: this.eventDeadLetterQueue,
        alarms: [replicationLagAlarm, eventDeadLetterQueueAlarm],
        lagAlarmMilliseconds: p.replicationLagAlarmSeconds * 1000,
      });
    }

    if (p.stackOutputs) {
      this.outputs(schedule, runs, replicationBoard);
    }
  }

  /** An SSE-SQS queue, deleted with the stack (it holds only work in flight). */
  private queue(id: string, o: {
    retention: number;
    visibility?: number;
    deadLetterQueue?: sqs.IQueue;
    sqsReason?: string;
  }): sqs.Queue {
    const queue = new sqs.Queue(this, id, {
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      retentionPeriod: Duration.days(o.retention),
      visibilityTimeout: o.visibility === undefined ? undefined : Duration.seconds(o.visibility),
      // Work queues (those with a dead-letter queue) poll long for tools
      // that read them directly; the event sources poll long on their own.
      receiveMessageWaitTime: o.deadLetterQueue ? Duration.seconds(20) : undefined,
      deadLetterQueue: o.deadLetterQueue
        ? { queue: o.deadLetterQueue, maxReceiveCount: this.p.maxReceiveCount }
        : undefined,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    skipChecks(queue, ['CKV_AWS_27', o.sqsReason ??
      'SSE-SQS (SqsManagedSseEnabled) encrypts it; the check only knows KmsMasterKeyId (checkov#7381)']);
    return queue;
  }

  /** Any message in a dead-letter queue is a problem; no data is health. */
  private dlqAlarm(id: string, queue: sqs.Queue, description: string): cloudwatch.Alarm {
    const alarm = new cloudwatch.Alarm(this, id, {
      alarmDescription: description,
      metric: queue.metricApproximateNumberOfMessagesVisible({ statistic: 'Maximum', period: Duration.minutes(5) }),
      evaluationPeriods: 1,
      threshold: 0,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    this.notifyAlarmTopic(alarm, true);
    return alarm;
  }

  private notifyAlarmTopic(alarm: cloudwatch.Alarm, ok: boolean): void {
    if (!this.p.alarmTopicArn) return;
    const topic = (this.node.tryFindChild('AlarmTopic') as sns.ITopic | undefined) ??
      sns.Topic.fromTopicArn(this, 'AlarmTopic', this.p.alarmTopicArn);
    alarm.addAlarmAction(new cloudwatchActions.SnsAction(topic));
    if (ok) alarm.addOkAction(new cloudwatchActions.SnsAction(topic));
  }

  /**
   * A function built by cargo-lambda from the workspace (binary
   * s3-fanout-NAME), its log group with a retention, and its own role: the
   * role is passed without policy updates, so neither the event source nor
   * any grant adds a statement the SAM template does not have.
   */
  private rustFunction(name: string, o: {
    description: string;
    timeout: number;
    memorySize?: number;
    environment: Record<string, string>;
    statements: (logGroup: logs.LogGroup) => iam.PolicyStatement[];
    queue?: { id: string; queue: sqs.IQueue; batchSize: number; maxConcurrency: number };
    skips: Array<[string, string]>;
  }): lambda.Function {
    const title = name.charAt(0).toUpperCase() + name.slice(1);
    const p = this.p;
    const functionName = `${Aws.STACK_NAME}-${name}`;
    // Named, and created before Lambda would create it without a retention.
    const logGroup = new logs.LogGroup(this, `${title}LogGroup`, {
      logGroupName: `/aws/lambda/${functionName}`,
      retention: p.logRetentionDays as logs.RetentionDays,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    skipChecks(logGroup, ['CKV_AWS_158', 'encrypted at rest by CloudWatch Logs; holds keys and counts, no object data or secrets']);
    const role = new iam.Role(this, `${title}Role`, {
      assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
      inlinePolicies: { [name]: new iam.PolicyDocument({ statements: o.statements(logGroup) }) },
    });
    const architecture = p.architecture === 'arm64' ? lambda.Architecture.ARM_64 : lambda.Architecture.X86_64;
    const fn = new RustFunction(this, `${title}Function`, {
      // The function's own crate, as the SAM template's CodeUri: cargo
      // builds that package alone, and the library without the CLI's
      // features, where the workspace root would unify every member's in.
      manifestPath: path.join(this.repoRoot, 'functions', name, 'Cargo.toml'),
      binaryName: `s3-fanout-${name}`,
      architecture,
      functionName,
      description: o.description,
      role: role.withoutPolicyUpdates(),
      timeout: Duration.seconds(o.timeout),
      memorySize: o.memorySize ?? 256,
      environment: { ...this.commonEnvironment(), ...o.environment },
    });
    dropRedundantDependsOn(fn);
    skipChecks(fn, ...o.skips,
      ['CKV_AWS_117', 'calls only public S3 and SQS endpoints; a VPC would need a NAT gateway or VPC endpoints'],
      ['CKV_AWS_173', 'no secrets, only bucket names, prefixes, filters, queue URLs; Lambda encrypts them at rest']);
    if (o.queue) {
      // The mapping polls with the function's role, whose statements above
      // already allow it: no grant here.
      fn.addEventSourceMapping(o.queue.id, {
        eventSourceArn: o.queue.queue.queueArn,
        batchSize: o.queue.batchSize,
        reportBatchItemFailures: true,
        maxConcurrency: o.queue.maxConcurrency,
      });
    }
    return fn;
  }

  /** The SAM template's Globals.Function.Environment. */
  private commonEnvironment(): Record<string, string> {
    const p = this.p;
    return {
      S3_FANOUT_SOURCE: `s3://${p.sourceBucket}/${p.sourcePrefix}`,
      S3_FANOUT_DESTINATION: `s3://${p.destinationBucket}/${p.destinationPrefix}`,
      S3_FANOUT_MODE: p.mode,
      S3_FANOUT_ALLOW_DELETE: String(p.allowDelete),
      S3_FANOUT_INCLUDE: p.include,
      S3_FANOUT_EXCLUDE: p.exclude,
      S3_FANOUT_REPORT_BUCKET: this.reportBucket.bucketName,
      S3_FANOUT_REPORT_PREFIX: p.reportPrefix,
      S3_FANOUT_SSE: p.destinationKmsKeyArn ? 'aws:kms' : '',
      S3_FANOUT_SSE_KMS_KEY_ID: p.destinationKmsKeyArn,
      RUST_LOG: 'info',
    };
  }

  /** The SAM template's outputs, under its keys: the CLI reads them. */
  private outputs(schedule: scheduler.CfnSchedule, runs: cloudwatch.Dashboard, replication?: cloudwatch.Dashboard): void {
    const p = this.p;
    const out = (key: string, value: string, description?: string) => {
      const output = new CfnOutput(this, key, { value, description });
      output.overrideLogicalId(key);
    };
    out('StateMachineArn', this.stateMachine.stateMachineArn, 'Start a run with StartExecution on this state machine.');
    out('WorkQueueUrl', this.workQueue.queueUrl, 'Copy tasks waiting for a copier.');
    out('RangeQueueUrl', this.rangeQueue.queueUrl,
      "The listers' range tasks (one per shard, then one per lister invocation).");
    out('RangeDeadLetterQueueUrl', this.rangeDeadLetterQueue.queueUrl,
      "Range tasks that failed on every receive; the run's report names their ranges.");
    out('DeadLetterQueueUrl', this.deadLetterQueue.queueUrl,
      'Copy tasks that failed MaxReceiveCount times; redrive them to the work queue once fixed.');
    out('ReportBucketName', this.reportBucket.bucketName, 'Bucket holding run state and reports.');
    out('ReportPrefix', p.reportPrefix, 'Folder of the report bucket with run state and reports.');
    out('RunTableName', this.runTable.tableName, "Per-run counters; s3-fanout status reads a run's progress here.");
    out('PlannerFunctionName', this.plannerFunction.functionName);
    out('ListerFunctionName', this.listerFunction.functionName);
    out('CopierFunctionName', this.copierFunction.functionName);
    out('ReporterFunctionName', this.reporterFunction.functionName);
    out('NightlyScheduleName', schedule.ref,
      'The EventBridge Scheduler schedule (default group) that starts the nightly full sync.');
    out('SyncSchedule', p.scheduleEnabled ? `${p.scheduleExpression} in ${p.scheduleTimezone}` : 'disabled',
      'When the nightly full sync runs, or "disabled".');
    out('RunDashboardName', runs.dashboardName,
      'CloudWatch dashboard of runs (executions, queues, copier and lister metrics).');
    if (this.eventQueue && this.eventDeadLetterQueue && this.replicatorFunction && replication) {
      out('EventQueueArn', this.eventQueue.queueArn, "QueueArn for the source bucket's native S3 event notifications.");
      out('EventQueueUrl', this.eventQueue.queueUrl, 'S3 object events waiting for the replicator.');
      out('EventDeadLetterQueueUrl', this.eventDeadLetterQueue.queueUrl,
        'Replication events that failed; the nightly full sync repairs their keys. Redrive them to the event ' +
        'queue once the cause is fixed.');
      out('ReplicatorFunctionName', this.replicatorFunction.functionName);
      out('ReplicationDashboardName', replication.dashboardName,
        'CloudWatch dashboard of replication (lag, keys reconciled, event queues).');
    }
    if (this.runTopic) {
      out('RunTopicArn', this.runTopic.topicArn,
        'SNS topic with one JSON message per finished run (attributes status and outcome, for subscription ' +
        'filter policies).');
    }
  }
}

function statement(sid: string, actions: string[], resources: string[], conditions?: Record<string, unknown>) {
  return new iam.PolicyStatement({ sid, effect: iam.Effect.ALLOW, actions, resources, conditions });
}

function writeOwnLogs(logGroup: logs.LogGroup) {
  return statement('WriteOwnLogs', ['logs:CreateLogStream', 'logs:PutLogEvents'], [logGroup.logGroupArn]);
}

/**
 * The L2s make a function and a state machine depend on their role, which
 * their Fn::GetAtt of the role's ARN already does (cfn-lint W3005). The
 * role is the only dependency they add here: no default policy exists.
 */
function dropRedundantDependsOn(construct: Construct): void {
  (construct.node.defaultChild as CfnResource).addDeletionOverride('DependsOn');
}

/**
 * checkov skips with their reasons, on the resource itself, as the SAM
 * template's `# checkov:skip=` comments are.
 */
function skipChecks(construct: Construct, ...skips: Array<[string, string]>): void {
  const resource = construct.node.defaultChild as CfnResource;
  resource.addMetadata('checkov', { skip: skips.map(([id, comment]) => ({ id, comment })) });
}

/** The repository root: where statemachine/ and the Cargo workspace are. */
function findRepoRoot(from: string): string {
  for (let dir = from; ; dir = path.dirname(dir)) {
    if (fs.existsSync(path.join(dir, 'statemachine', 'sync.asl.json')) && fs.existsSync(path.join(dir, 'Cargo.toml'))) {
      return dir;
    }
    if (path.dirname(dir) === dir) {
      throw new Error(`S3Fanout: no statemachine/sync.asl.json and Cargo.toml above ${from}`);
    }
  }
}
