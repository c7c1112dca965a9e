/** The reservations page's range switch: the region's source follows the button, and so does the address. */
export function reservationsRange(reload: (region: HTMLElement) => void) {
  const region = document.getElementById('reservations');
  if (!region) return;
  const buttons = [...document.querySelectorAll<HTMLButtonElement>('button[data-range]')];
  for (const button of buttons) {
    button.addEventListener('click', () => {
      const range = button.dataset.range ?? '7d';
      for (const other of buttons) other.setAttribute('aria-pressed', String(other === button));
      region.dataset.region = `/api/v1/ui/fragments/reservations?range=${encodeURIComponent(range)}`;
      history.replaceState(null, '', `/ui/reservations?range=${encodeURIComponent(range)}`);
      reload(region);
    });
  }
}
