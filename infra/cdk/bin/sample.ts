#!/usr/bin/env node
// The sample app: the stacks of sample-stacks.json, with fixed placeholder
// account and region so `cdk synth` needs no AWS credentials.
//
//   npx cdk synth                           builds the functions (cargo-lambda)
//   npx cdk synth -c s3-fanout:bundle=false  synthesizes without building
import * as fs from 'node:fs';
import * as path from 'node:path';
import { App, Stack } from 'aws-cdk-lib';
import { S3Fanout, S3FanoutProps } from '../lib';

const app = new App();
// Bundling is skipped by the aws:cdk:bundling-stacks context, which
// cargo-lambda-cdk honours (its functions are assets with bundling). But
// the CLI sets that key itself, ["**"] for synth and deploy, and refuses a
// -c of any aws: key; so the app sets it, after the CLI's context is
// loaded and before any stack exists. Such an assembly has the crates'
// sources where the bootstraps belong: for checks, never for a deploy.
if (app.node.tryGetContext('s3-fanout:bundle') === 'false') {
  app.node.setContext('aws:cdk:bundling-stacks', []);
}

const sample = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'bin', 'sample-stacks.json'), 'utf8')) as {
  env: { account: string; region: string };
  stacks: Record<string, S3FanoutProps>;
};
for (const [name, props] of Object.entries(sample.stacks)) {
  const stack = new Stack(app, name, { env: sample.env });
  new S3Fanout(stack, 'S3Fanout', props);
}
