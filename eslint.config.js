// ESLint checks what the type checker cannot: the import boundaries between the folders of src/ (each
// folder's DESIGN.md says what it must never import) and the absence of import cycles. Style is left to
// review; the rule sets below are the recommended ones with the few rules turned off that only churn.
import js from '@eslint/js';
import { createTypeScriptImportResolver } from 'eslint-import-resolver-typescript';
import importX from 'eslint-plugin-import-x';
import tseslint from 'typescript-eslint';

/** Folders whose code does I/O: the pure core must not reach them, not even for a type. */
const IO_FOLDERS = ['storage', 'transport', 'node', 'api', 'cli', 'metrics', 'kube'];

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', '.local-cluster/**', '.netns-cluster/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts', '**/*.js', '**/*.mjs'],
    plugins: { 'import-x': importX },
    languageOptions: {
      ecmaVersion: 2022,
      sourceType: 'module',
      globals: {
        process: 'readonly', console: 'readonly', Buffer: 'readonly', URL: 'readonly', AbortSignal: 'readonly',
        AbortController: 'readonly', setTimeout: 'readonly', clearTimeout: 'readonly', setInterval: 'readonly',
        clearInterval: 'readonly', setImmediate: 'readonly', clearImmediate: 'readonly', fetch: 'readonly',
        performance: 'readonly', TextEncoder: 'readonly', TextDecoder: 'readonly', queueMicrotask: 'readonly',
        structuredClone: 'readonly', NodeJS: 'readonly',
      },
    },
    settings: {
      // Parse imported .ts files too (no-cycle follows imports through them).
      'import-x/extensions': ['.ts', '.js', '.mjs'],
      'import-x/parsers': { '@typescript-eslint/parser': ['.ts'] },
      // Resolves `./x.js` to `./x.ts` as tsc does under NodeNext, so that the import rules see real files.
      'import-x/resolver-next': [createTypeScriptImportResolver({ project: './tsconfig.test.json' })],
    },
    rules: {
      // Unused names are the type checker's business (noUnusedLocals is a tsconfig choice); here they only churn.
      '@typescript-eslint/no-unused-vars': 'off',
      'no-unused-vars': 'off',
      // Casts through `any` at the edges (gRPC, JSON) are deliberate and reviewed.
      '@typescript-eslint/no-explicit-any': 'off',
      '@typescript-eslint/no-non-null-assertion': 'off',
      // `for (;;)` loops and `while (true)` with a break are the clearest form of a poll or a read loop.
      'no-constant-condition': 'off',
      // grpc-js hands out clients whose methods are typed as Function.
      '@typescript-eslint/no-unsafe-function-type': 'off',
      'no-empty': ['error', { allowEmptyCatch: true }],
      // Stripping control characters from what a terminal shows is a deliberate use of them in a pattern.
      'no-control-regex': 'off',
    },
  },
  {
    // No import cycles anywhere in src/: a cycle makes module initialisation order matter, and under ESM
    // it shows up as a binding that is still undefined. Type-only imports are erased and may cycle.
    files: ['src/**/*.ts'],
    rules: {
      'import-x/no-cycle': ['error', { ignoreExternal: true }],
    },
  },
  {
    // The CLI is a client of the service, never a part of it: nothing in src/ outside src/cli imports it.
    files: ['src/**/*.ts'],
    ignores: ['src/cli/**'],
    rules: {
      'import-x/no-restricted-paths': [
        'error',
        { zones: [{ target: './src', from: './src/cli', message: 'only src/cli may import src/cli.' }] },
      ],
    },
  },
  {
    // The core is pure (NOTEBOOK, STYLE.md "A pure core"): no Node built-ins, no storage, transport,
    // driver, API or CLI. Its inputs and outputs are data; the driver does the I/O. (This block comes after
    // the CLI one because a later block's options for the same rule replace an earlier one's.)
    files: ['src/core/**/*.ts'],
    rules: {
      'import-x/no-nodejs-modules': 'error',
      'import-x/no-restricted-paths': [
        'error',
        {
          zones: IO_FOLDERS.map((folder) => ({
            target: './src/core',
            from: `./src/${folder}`,
            message: `src/core is pure and must not import src/${folder}.`,
          })),
        },
      ],
    },
  },
);
