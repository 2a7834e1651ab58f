export { S3Fanout } from './s3-fanout';
export { S3FanoutProps } from './props';
