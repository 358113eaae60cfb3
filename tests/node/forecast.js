// The forecast tool both AI SDK files drive, and the step settings that force it on the first step.
import { z } from 'zod';
import { stepCountIs, tool } from 'ai';

export const Forecast = z.object({ city: z.string(), days: z.number().int().min(1).max(7) });

/** A tool that records every call it runs and answers with a marked result. */
export function forecastTool() {
  const calls = [];
  const weather = tool({
    description: 'The forecast for a city, for a number of days.',
    inputSchema: Forecast,
    execute: async (input) => {
      calls.push(input);
      return { city: input.city, days: input.days, outlook: 'sunny', station: 'ZX-4417' };
    },
  });
  return { calls, weather };
}

// The first step is forced to the tool; the next one may answer in text, so the loop ends. Tool and
// object cases run at temperature 0: the same run every time, never cut short by an unlucky sample.
export const firstStepForced = (toolName) => ({
  toolChoice: { type: 'tool', toolName },
  stopWhen: stepCountIs(3),
  prepareStep: ({ stepNumber }) => (stepNumber === 0 ? {} : { toolChoice: 'none' }),
});
