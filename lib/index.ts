/** qwen-node: run Qwen-7B / Qwen-7B-Chat in Node.js. */
export { loadModel, Model, Sequence, MAX_POSITIONS } from './model/model';
export type { LoadOptions, Device, ComputeDtype } from './model/model';
export { Generation } from './model/generation';
export type { GenerateOptions, ChatOptions, ChatResult, ChatHistory } from './model/generation';
export type { GenerationChunk, GenerationResult, FinishReason, Usage } from './generation/generate';
export type { GenerationOptions, GenerationCallOptions } from './generation/config';
export { Tokenizer } from './tokenizer';
export { makeContext, messagesToQuery, extractReply } from './chat/chatml';
export type { ChatMessage } from './chat/chatml';
export type { QwenConfig } from './model/config';
export { QwenError } from './errors';
export type { QwenErrorCode } from './errors';
export { makeRandomCheckpoint } from './model/makeRandom';
export { backends } from './backends';
export { createServer } from './server';
export type { ServerOptions } from './server';
