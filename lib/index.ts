/** qwen-node: run Qwen-7B / Qwen-7B-Chat in Node.js. */
export { loadModel, Model, Sequence, MAX_POSITIONS } from './model/model';
export type { LoadOptions, Device, ComputeDtype } from './model/model';
export type { QwenConfig } from './model/config';
export { QwenError } from './errors';
export type { QwenErrorCode } from './errors';
export { makeRandomCheckpoint } from './model/makeRandom';
export { backends } from './backends';
