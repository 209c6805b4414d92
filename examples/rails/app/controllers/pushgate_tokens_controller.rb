# frozen_string_literal: true

# GET /pushgate/token: the signed-in user's connection token. The browser's
# centrifuge client calls it through getToken on connect, and again when
# the token expires.
class PushgateTokensController < ApplicationController
  before_action :authenticate_user! # your authentication

  def show
    channels = ["news"]
    channels << "team:#{current_user.team_id}" if current_user.team_id
    render json: {
      token: Pushgate.connection_token(current_user, ttl: 10.minutes, channels: channels,
                                                     info: { name: current_user.name })
    }
  end

  # GET /pushgate/subscription_token?channel=private:billing
  def subscription
    channel = params.require(:channel)
    head :forbidden and return unless current_user.admin? || channel != "private:billing"

    render json: { token: Pushgate.subscription_token(current_user, channel, ttl: 10.minutes) }
  end
end
