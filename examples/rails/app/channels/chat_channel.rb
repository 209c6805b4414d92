# frozen_string_literal: true

# An ordinary Action Cable channel, run by the Rails app for pushgate's
# /cable. Each call builds the channel anew (as AnyCable does): what must
# survive between calls goes in state_attr_accessor, not in @variables.
class ChatChannel < ApplicationCable::Channel
  include Pushgate::Cable::Presence # join_presence / leave_presence (optional)

  state_attr_accessor :room

  def subscribed
    self.room = Room.find_by(id: params[:room])
    return reject unless room && current_user.can_enter?(room)

    stream_for room, whisper: true # whisper: typing indicators go to the room's readers, without a call
    transmit({ type: "history", messages: room.messages.last(20).map(&:as_json) })
    join_presence(id: current_user.id, info: { name: current_user.name })
  end

  # consumer.subscriptions.create(...).perform("speak", { text: "hi" })
  def speak(data)
    message = room.messages.create!(user: current_user, text: data["text"])
    # to_others: the speaker's own tab does not get its echo (it showed the message already)
    ChatChannel.broadcast_to(room, { type: "message", message: message.as_json }, to_others: true)
  end

  def unsubscribed
    current_user.update(away_since: Time.current) # runs on tab close, unsubscribe and node drain
  end
end
