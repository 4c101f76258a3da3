/**
 * Open a Hugging Face Qwen directory: config.json, generation_config.json, and the safetensors weights (one file or
 * the shards of model.safetensors.index.json). Every tensor of weightTable(config) must be present with the shape
 * the config implies; every defect is a QwenError('E_BAD_CHECKPOINT') naming the file and the tensor.
 */
import { promises as fsp } from 'fs';
import * as path from 'path';
import { QwenError } from '../errors';
import { QwenConfig, parseConfig } from './config';
import { StTensor, readSafetensorsHeader } from './safetensors';
import { weightTable } from './weights';

export interface CheckpointTensor extends StTensor {
  file: number; // index into Checkpoint.files
}

export interface Checkpoint {
  dir: string;
  config: QwenConfig;
  generationConfig: Record<string, unknown> | null; // raw generation_config.json, null when absent
  files: string[]; // absolute shard paths
  tensors: CheckpointTensor[]; // in weightTable order
  bytes: number; // total weight bytes
}

const bad = (msg: string) => new QwenError('E_BAD_CHECKPOINT', msg);

async function readJson(file: string, optional: boolean): Promise<unknown> {
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
      if (optional) return undefined;
      throw bad(`${file}: not found`);
    }
    throw bad(`${file}: cannot read (${(e as Error).message})`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw bad(`${file}: malformed JSON (${(e as Error).message})`);
  }
}

/** Tensor name -> shard file name, from the index or the single model.safetensors. */
async function weightMap(dir: string): Promise<Map<string, string> | 'single'> {
  const indexPath = path.join(dir, 'model.safetensors.index.json');
  const index = await readJson(indexPath, true);
  if (index === undefined) {
    try {
      await fsp.access(path.join(dir, 'model.safetensors'));
    } catch {
      throw bad(`${dir}: no weights found (neither model.safetensors nor model.safetensors.index.json)`);
    }
    return 'single';
  }
  const wm = (index as { weight_map?: unknown })?.weight_map;
  if (typeof wm !== 'object' || wm === null || Array.isArray(wm)) throw bad(`${indexPath}: "weight_map" must be an object`);
  const out = new Map<string, string>();
  for (const [name, file] of Object.entries(wm as Record<string, unknown>)) {
    if (typeof file !== 'string' || file.includes('/') || file.includes('\\') || file.startsWith('.')) {
      throw bad(`${indexPath}: tensor "${name}" maps to an invalid shard name ${JSON.stringify(file)}`);
    }
    out.set(name, file);
  }
  return out;
}

export async function openCheckpoint(dirIn: string): Promise<Checkpoint> {
  if (typeof dirIn !== 'string' || dirIn.length === 0) {
    throw new QwenError('E_BAD_ARG', `dir must be a non-empty string path to a model directory (got ${typeof dirIn})`);
  }
  const dir = path.resolve(dirIn);
  let st;
  try {
    st = await fsp.stat(dir);
  } catch {
    throw bad(`${dir}: model directory not found`);
  }
  if (!st.isDirectory()) throw bad(`${dir}: not a directory`);

  const configPath = path.join(dir, 'config.json');
  const config = parseConfig(await readJson(configPath, false), configPath);
  const genPath = path.join(dir, 'generation_config.json');
  const gen = await readJson(genPath, true);
  if (gen !== undefined && (typeof gen !== 'object' || gen === null || Array.isArray(gen))) {
    throw bad(`${genPath}: expected a JSON object`);
  }

  const map = await weightMap(dir);
  const specs = weightTable(config);
  const shardNames = map === 'single' ? ['model.safetensors'] : [...new Set(map.values())].sort();
  const files = shardNames.map((f) => path.join(dir, f));
  // A shard named by the index but absent is reported with a tensor it should hold.
  await Promise.all(
    files.map(async (f, i) => {
      try {
        await fsp.access(f);
      } catch {
        const holder = map === 'single' ? undefined : [...map].find(([, s]) => s === shardNames[i])?.[0];
        throw bad(`${f}: shard not found${holder ? ` (the index places tensor "${holder}" in it)` : ''}`);
      }
    }),
  );
  const headers = await Promise.all(files.map((f) => readSafetensorsHeader(f)));

  const tensors: CheckpointTensor[] = [];
  let bytes = 0;
  for (const spec of specs) {
    let fileIdx: number;
    if (map === 'single') {
      fileIdx = 0;
    } else {
      const shard = map.get(spec.name);
      if (shard === undefined) throw bad(`${path.join(dir, 'model.safetensors.index.json')}: missing tensor "${spec.name}"`);
      fileIdx = shardNames.indexOf(shard);
    }
    const t = headers[fileIdx].tensors.get(spec.name);
    if (!t) throw bad(`${files[fileIdx]}: missing tensor "${spec.name}"`);
    if (t.shape.length !== spec.shape.length || t.shape.some((d, i) => d !== spec.shape[i])) {
      throw bad(
        `${files[fileIdx]}: tensor "${spec.name}" has shape [${t.shape.join(', ')}], ` +
          `expected [${spec.shape.join(', ')}] from config.json`,
      );
    }
    tensors.push({ ...t, file: fileIdx });
    bytes += t.nbytes;
  }
  return { dir, config, generationConfig: (gen as Record<string, unknown>) ?? null, files, tensors, bytes };
}
