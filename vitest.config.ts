import { defineConfig } from 'vitest/config';

// Forks, not threads: native state does not share well between worker threads.
export default defineConfig({
  test: {
    pool: 'forks',
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
  },
});
