// The neurotap CLI: run, generate, grad, attribute, steer-train, serve, extract, merge, verify, tokenize,
// hooks, build-cuda, with flags from one table (commands.ts). Its flags and output formats are a
// contract for scripts and other languages (README "CLI"); test/cli*.test.ts run it as a subprocess.
import { loadModel, type Model } from '../model/Model.js';
import { num, one, parseArgs, required, UsageError, type ParsedArgs } from './args.js';
import { runBuildCuda } from './build-cuda.js';
import { COMMANDS, findCommand } from './commands.js';
import { checkExtractFlags, runExtract, runMerge, runVerify } from './extract.js';
import { checkGenerateFlags, checkSteerTrainFlags, runGenerate, runSteerTrain } from './generate.js';
import { checkGradFlags, runAttribute, runGrad } from './grad.js';
import { commandHelp, packageVersion, topHelp, usageHint } from './help.js';
import { asCodedError } from './io.js';
import { checkRunFlags, runRun } from './run.js';
import { checkServeFlags, runServe } from './serve.js';
import { closest } from './suggest.js';

/** A command that loads a model: `check` runs first (usage errors, unwritable --out), then `run`. */
interface ModelCommand {
  check?: (args: ParsedArgs) => void;
  run: (model: Model, args: ParsedArgs) => Promise<void>;
}

const WITH_MODEL: Record<string, ModelCommand> = {
  run: { check: checkRunFlags, run: runRun },
  generate: { check: checkGenerateFlags, run: runGenerate },
  grad: { check: checkGradFlags, run: runGrad },
  attribute: { check: checkGradFlags, run: runAttribute },
  'steer-train': { check: checkSteerTrainFlags, run: runSteerTrain },
  extract: { check: checkExtractFlags, run: (model, args) => runExtract(model, args) },
  serve: { check: checkServeFlags, run: runServe },
  tokenize: {
    run: async (model, args) => {
      process.stdout.write(JSON.stringify(model.tokenize(required(args, 'text'))[0]) + '\n');
    },
  },
  hooks: {
    run: async (model) => {
      const width = Math.max(...model.hooks.map((h) => h.name.length));
      process.stdout.write(model.hooks.map((h) => `${h.name.padEnd(width)}  [${h.shape.join(', ')}]`).join('\n') + '\n');
    },
  },
};

const WITHOUT_MODEL: Record<string, (args: ParsedArgs) => Promise<void>> = {
  merge: runMerge,
  verify: runVerify,
  'build-cuda': runBuildCuda,
};

async function openModel(args: ParsedArgs): Promise<Model> {
  const threads = num(args, 'threads');
  const compute = one(args, 'compute') as 'f32' | 'bf16' | undefined;
  return loadModel(required(args, 'model'), {
    dtype: one(args, 'dtype') as 'f32' | 'f16' | 'bf16',
    ...(compute !== undefined ? { compute } : {}),
    device: one(args, 'device') as 'cpu' | 'cuda' | 'auto',
    ...(threads !== undefined ? { threads } : {}),
  });
}

/** A first argument that is no command: the closest command or top-level flag, if any is close. */
function unknownCommand(cmd: string): UsageError {
  if (cmd.startsWith('-')) {
    const near = closest(cmd.replace(/^-+/, ''), ['help', 'version']);
    if (near) return new UsageError(`unknown option ${cmd}; did you mean --${near}?`);
    return new UsageError(`expected a command before any flag, got '${cmd}'`);
  }
  const near = closest(cmd, COMMANDS.map((c) => c.name));
  return new UsageError(`unknown command '${cmd}'${near ? `; did you mean '${near}'?` : ''}`);
}

async function dispatch(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === undefined) {
    process.stdout.write(topHelp() + '\n');
    return 2;
  }
  if (cmd === '--help' || cmd === '-h' || (cmd === 'help' && rest.length === 0)) {
    process.stdout.write(topHelp() + '\n');
    return 0;
  }
  if (cmd === '--version' || cmd === '-v') {
    process.stdout.write(packageVersion() + '\n');
    return 0;
  }
  if (cmd === 'help') {
    const command = findCommand(rest[0]!);
    if (!command || rest.length > 1) throw command ? new UsageError(`help takes one command, got '${rest.join(' ')}'`) : unknownCommand(rest[0]!);
    process.stdout.write(commandHelp(command) + '\n');
    return 0;
  }
  const command = findCommand(cmd);
  if (!command) throw unknownCommand(cmd);
  try {
    const args = parseArgs(rest, command, COMMANDS);
    if (args.help) {
      process.stdout.write(commandHelp(command) + '\n');
      return 0;
    }
    const withoutModel = WITHOUT_MODEL[command.name];
    if (withoutModel) {
      await withoutModel(args);
      return 0;
    }
    const handler = WITH_MODEL[command.name]!;
    handler.check?.(args);
    const model = await openModel(args);
    try {
      await handler.run(model, args);
    } finally {
      model.dispose();
    }
    return 0;
  } catch (err) {
    if (err instanceof UsageError) err.command ??= command;
    throw err;
  }
}

/** Runs the CLI with `argv` (without node and script); resolves to the exit code. */
export async function main(argv: string[]): Promise<number> {
  try {
    return await dispatch(argv);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`neurotap: ${err.message}\n${usageHint(err.command)}\n`);
      return 2;
    }
    // Every other failure is one line with its code; NEUROTAP_DEBUG=1 adds the stack.
    const coded = asCodedError(err);
    process.stderr.write(`neurotap: error [${coded.code}]: ${coded.message}\n`);
    if (process.env.NEUROTAP_DEBUG && err instanceof Error) process.stderr.write(`${err.stack}\n`);
    return 1;
  }
}
