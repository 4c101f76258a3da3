/**
 * JSON schemas of the request bodies (fastify's ajv, types only: no coercion, no defaults, nothing removed). Ranges and
 * cross-field rules are checked in params.ts, where every message can name the parameter and its allowed range.
 * `null` is accepted wherever OpenAI accepts it and means "not given". Unknown keys are ignored, as most
 * OpenAI-compatible servers do; known but unsupported ones (echo, best_of, tools...) are refused in params.ts.
 */
const nullable = (type: string | string[]) => ({ type: [...(Array.isArray(type) ? type : [type]), 'null'] });

const SAMPLING = {
  model: { type: 'string' },
  max_tokens: nullable('integer'),
  temperature: nullable('number'),
  top_p: nullable('number'),
  top_k: nullable('integer'), // extension (vLLM's)
  repetition_penalty: nullable('number'), // extension (vLLM's; HF semantics)
  presence_penalty: nullable('number'),
  frequency_penalty: nullable('number'),
  stop: { type: ['string', 'array', 'null'], items: { type: 'string' }, maxItems: 4 },
  seed: nullable('integer'),
  n: nullable('integer'),
  stream: nullable('boolean'),
  stream_options: { type: ['object', 'null'], properties: { include_usage: nullable('boolean') } },
  user: { type: 'string' },
  logit_bias: nullable('object'),
} as const;

export const completionBodySchema = {
  type: 'object',
  required: ['prompt'],
  properties: {
    ...SAMPLING,
    prompt: { type: ['string', 'array'] }, // string, token ids, or a batch of one of either (params.ts)
    logprobs: nullable('integer'),
    echo: nullable('boolean'),
    best_of: nullable('integer'),
    suffix: nullable('string'),
  },
} as const;

export const chatBodySchema = {
  type: 'object',
  required: ['messages'],
  properties: {
    ...SAMPLING,
    max_completion_tokens: nullable('integer'),
    messages: {
      type: 'array',
      minItems: 1,
      items: {
        type: 'object',
        required: ['role', 'content'],
        properties: {
          role: { enum: ['system', 'user', 'assistant'] },
          content: { type: ['string', 'array'] }, // a string, or text parts [{ type: 'text', text }]
          name: { type: 'string' },
        },
      },
    },
    logprobs: nullable('boolean'),
    top_logprobs: nullable('integer'),
    tools: nullable('array'),
    functions: nullable('array'),
    response_format: nullable('object'),
  },
} as const;
