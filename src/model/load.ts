// loadModel: checks the options, resolves the folder (or hub id), reads the tokenizer and loads
// the weights off the JS thread with an AbortSignal and progress. Tests: test/model.test.ts,
// test/abort-progress.test.ts, test/hub.test.ts.
import { availableParallelism } from 'node:os';

import { backendDir, native, type NativeModel } from '../bindings/native.js';
import { processCudaLibraryDirs } from '../bindings/cuda-libs.js';
import { DeviceError, InvalidInputError, UnsupportedModelError } from '../errors.js';
import type { Family } from '../hooks/names.js';
import { Tokenizer } from '../tokenizer.js';
import { resolveModelDir } from './hub.js';
import { Model, probeDevice, type LoadModelOptions } from './Model.js';
import { abortable, checkCallback } from './task.js';
import { checkSignal, invalid, isObject } from './validate.js';

/**
 * Loads a Hugging Face model directory (config.json, safetensors weights, optional
 * tokenizer.json), or a hub id (`ORG/NAME`, `ORG/NAME@REVISION`) found in the local Hugging Face
 * cache (offline; README "Model folders"). Loading runs off the JS thread. Pass `family` to type
 * hook names.
 */
export async function loadModel<F extends Family = Family>(dir: string, options: LoadModelOptions<F> = {}): Promise<Model<F>> {
  if (typeof dir !== 'string' || dir === '') invalid(`loadModel takes a model directory path, got ${typeof dir === 'string' ? "''" : String(dir)}`);
  if (!isObject(options as unknown)) invalid('loadModel options must be an object');
  const requested = options.device ?? 'cpu';
  if (requested !== 'cpu' && requested !== 'cuda' && requested !== 'auto')
    throw new DeviceError('ERR_UNSUPPORTED_DEVICE', `unknown device '${String(requested)}' (cpu, cuda, auto)`);
  const dtype = options.dtype ?? 'f32';
  if (dtype !== 'f32' && dtype !== 'f16' && dtype !== 'bf16') throw new DeviceError('ERR_UNSUPPORTED_DTYPE', `unknown dtype '${String(dtype)}' (f32, f16, bf16)`);
  const device: 'cpu' | 'cuda' = requested === 'auto' ? (probeDevice('cuda').available ? 'cuda' : 'cpu') : requested;
  if (device === 'cpu' && dtype === 'f16') throw new DeviceError('ERR_UNSUPPORTED_DTYPE', "dtype 'f16' is not supported on the CPU; use 'f32' or 'bf16'");
  const compute = options.compute;
  if (compute !== undefined && compute !== 'f32' && compute !== 'bf16') throw new DeviceError('ERR_UNSUPPORTED_DTYPE', `unknown compute '${String(compute)}' (f32, bf16)`);
  if (compute === 'bf16' && dtype !== 'bf16')
    throw new DeviceError('ERR_UNSUPPORTED_DTYPE', `compute 'bf16' needs bf16 weights (dtype 'bf16'), not dtype '${dtype}'`);
  if (device === 'cuda' && compute !== undefined && compute !== dtype)
    throw new DeviceError('ERR_UNSUPPORTED_DTYPE', `on CUDA, dtype '${dtype}' weights compute in ${dtype}, not ${compute}`);
  const threads = options.threads ?? availableParallelism();
  if (!Number.isInteger(threads) || threads < 1) throw new InvalidInputError('ERR_INVALID_INPUT', `threads must be a positive integer, got ${threads}`);
  checkSignal(options.signal, 'signal');
  checkCallback(options.onProgress, 'onProgress');
  const abs = resolveModelDir(dir);
  const tokenizer = Tokenizer.fromDir(abs);
  let handle: NativeModel;
  const task = abortable(options.signal, options.onProgress);
  try {
    handle = await native().loadModel(abs, {
      threads,
      device,
      dtype,
      ...(compute ? { compute } : {}),
      backendDir: backendDir(),
      ...(device === 'cpu' ? {} : { libraryDirs: processCudaLibraryDirs() }),
      ...(task.control ? { control: task.control } : {}),
    });
  } catch (err) {
    task.done();
    throw task.error(err);
  }
  try {
    task.done(true);
  } catch (err) {
    handle.dispose();
    throw err;
  }
  const model = new Model<F>(abs, handle, tokenizer);
  if (options.family && model.config.family !== options.family) {
    model.dispose();
    throw new UnsupportedModelError('ERR_FAMILY_MISMATCH', `${abs} is a ${model.config.family} model, not ${options.family}`);
  }
  return model;
}

