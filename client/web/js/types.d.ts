// Types for the type check only (tsc --checkJs; not served).
export type Child = Node | string | number | null | undefined | false;
export type Children = Child | Children[];
